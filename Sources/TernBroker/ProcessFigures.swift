import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What Linux's `/proc` says of a process: CPU time, resident memory, open files. For the
/// metrics endpoint (the broker's own figures) and `tern bench -b PID` (another process's).
public struct ProcessFigures: Sendable, Hashable {
    /// User plus system CPU time, in seconds.
    public var cpuSeconds: Double
    /// Resident set size, in bytes.
    public var residentBytes: Int
    /// Open file descriptors, sockets included; `nil` when they cannot be listed.
    public var openFileDescriptors: Int?

    /// Reads process `pid` (this one by default), or `nil` if it cannot: no such process, or not Linux.
    public static func read(pid: Int32? = nil) -> ProcessFigures? {
        let directory = pid.map { "/proc/\($0)" } ?? "/proc/self"
        guard let stat = try? String(contentsOfFile: "\(directory)/stat", encoding: .utf8),
            let status = try? String(contentsOfFile: "\(directory)/status", encoding: .utf8),
            let afterName = stat.range(of: ")", options: .backwards)
        else { return nil }
        // The fields after "(name)": state is the first, utime the 12th and stime the 13th.
        let fields = stat[afterName.upperBound...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let residentKiB = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
            .flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
        let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/fd").count
        return ProcessFigures(
            cpuSeconds: (user + system) / ticks,
            residentBytes: (residentKiB ?? 0) * 1024,
            openFileDescriptors: descriptors
        )
    }
}
