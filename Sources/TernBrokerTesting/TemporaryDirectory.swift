import Foundation

/// A directory under the system's temporary directory for one test, removed with its value.
public struct TemporaryDirectory: ~Copyable {
    public let path: String

    /// Creates `tern-PREFIX-UUID`.
    public init(prefix: String) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("tern-\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// The path of `name` inside it.
    public func file(_ name: String) -> String { path + "/" + name }
}
