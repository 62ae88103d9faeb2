import Foundation
import Testing

/// `dist/tern.service`, checked by systemd's own parser. The unit names the installed binary,
/// `/usr/local/bin/tern`; the check points it at the one this build made, since
/// `systemd-analyze verify` requires its commands to exist.
@Suite(
    "systemd unit",
    .enabled(
        if: Peers.which("systemd-analyze") != nil && ternExecutable != nil,
        "systemd-analyze or the tern executable is missing"
    )
)
struct SystemdUnitTests {
    static let unit = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("dist/tern.service")

    @Test("systemd-analyze verify accepts dist/tern.service without a complaint")
    func verifies() async throws {
        let text = try String(contentsOf: Self.unit, encoding: .utf8)
        #expect(text.contains("ExecStart=/usr/local/bin/tern serve -c /etc/tern/tern.conf"))
        #expect(text.contains("Restart=on-failure"))
        #expect(text.contains("User=tern"))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tern-unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let copy = directory.appendingPathComponent("tern.service")
        try text.replacingOccurrences(of: "/usr/local/bin/tern", with: ternExecutable ?? "")
            .write(to: copy, atomically: true, encoding: .utf8)
        let output = try await Peers.runOffPool(
            Peers.which("systemd-analyze") ?? "",
            ["verify", copy.path],
            timeout: 60
        )
        #expect(output.status == 0, "\(output.stderr)")
        // It reports settings it ignores on stderr and still exits 0: any line there is a defect.
        #expect(output.stderr.isEmpty, "\(output.stderr)")
    }
}
