public import NIOCore

/// A validated Topic Name: the topic a PUBLISH is sent to (MQTT 5.0 §4.7).
///
/// The name is kept as the UTF-8 bytes it arrived in, so decoding a PUBLISH does not allocate a
/// `String`; ``string`` makes one when asked. A Topic Name is at least one byte long, contains no
/// wildcard (`+`, `#`) and no U+0000. The one exception is ``aliasOnly``: an MQTT 5 PUBLISH may
/// carry an empty name together with a Topic Alias (§3.3.2.3.4).
public struct TopicName: Hashable, Sendable, CustomStringConvertible {
    /// The name's UTF-8 bytes.
    public let utf8: ByteBuffer

    /// Validates `string` as a Topic Name.
    ///
    /// - Throws: ``TernError`` with *Topic Name invalid* (0x90) for an empty name, a wildcard or
    ///   U+0000, or a name longer than 65,535 bytes.
    public init(_ string: String) throws(TernError) {
        let bytes = ByteBuffer(string: string)
        guard bytes.readableBytes <= Int(UInt16.max) else {
            throw TernError(.topicNameInvalid, "a topic name is longer than 65,535 bytes")
        }
        guard !string.utf8.contains(0) else {
            throw TernError(.topicNameInvalid, "a topic name contains U+0000")
        }
        try Self.checkNoWildcards(bytes)
        self.utf8 = bytes
    }

    /// Wraps bytes already checked to be a well-formed MQTT UTF-8 string, checking the topic rules.
    init(decodedUTF8 bytes: ByteBuffer) throws(TernError) {
        try Self.checkNoWildcards(bytes)
        self.utf8 = bytes
    }

    private init(unchecked bytes: ByteBuffer) {
        self.utf8 = bytes
    }

    /// The empty name of an MQTT 5 PUBLISH that names its topic only through a Topic Alias.
    public static let aliasOnly = TopicName(unchecked: ByteBuffer())

    private static func checkNoWildcards(_ bytes: ByteBuffer) throws(TernError) {
        guard bytes.readableBytes > 0 else {
            throw TernError(.topicNameInvalid, "a topic name is empty")
        }
        let hasWildcard = bytes.withUnsafeReadableBytes { raw in
            raw.contains(UInt8(ascii: "+")) || raw.contains(UInt8(ascii: "#"))
        }
        if hasWildcard {
            throw TernError(.topicNameInvalid, "a topic name contains a wildcard character (+ or #)")
        }
    }

    /// The name as a `String`.
    public var string: String { String(buffer: utf8) }

    /// Whether this is the empty name used with a Topic Alias.
    public var isEmpty: Bool { utf8.readableBytes == 0 }

    /// Whether the name starts with `$`, like `$SYS/...`: such topics are not matched by a
    /// wildcard at the first level (MQTT 5.0 §4.7.2).
    public var isDollarTopic: Bool { utf8.getInteger(at: utf8.readerIndex, as: UInt8.self) == UInt8(ascii: "$") }

    public var description: String { string }
}
