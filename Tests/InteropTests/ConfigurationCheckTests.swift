import Foundation
import TernBrokerTesting
import Testing

/// `tern serve --check -c FILE`: 0 for a configuration that would start, 3 with `file:line: reason`
/// for one that would not, and nothing bound either way.
@Suite("tern serve --check", .enabled(if: ternExecutable != nil, "the tern executable is missing"))
struct ConfigurationCheckTests {
    let tern = ternExecutable ?? ""

    func check(_ text: String, in directory: borrowing TemporaryDirectory) async throws -> Peers.Output {
        let path = directory.file("tern.conf")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try await Peers.runOffPool(tern, ["serve", "--check", "-c", path], timeout: 30)
    }

    @Test("a good file: exit 0, and what the broker would listen on, TLS files loaded")
    func good() async throws {
        let directory = try TemporaryDirectory(prefix: "check")
        let certificates = try await FixtureCertificates.make()
        defer { certificates.remove() }
        let output = try await check(
            """
            per_listener_settings false
            allow_anonymous true
            listener 18999 127.0.0.1
            max_connections 100
            listener 18998 127.0.0.1
            certfile \(certificates.serverCertificate)
            keyfile \(certificates.serverKey)
            metrics_listener 19998
            persistence true
            persistence_location \(directory.path)
            connection cloud
            address 127.0.0.1:18997 127.0.0.1:18996
            topic sensors/# out 1
            """,
            in: directory
        )
        #expect(output.status == 0, "\(output.stderr)")
        #expect(output.stdout.contains("listener mqtt 127.0.0.1:18999, max_connections 100"))
        #expect(output.stdout.contains("listener mqtts 127.0.0.1:18998, TLS with \(certificates.serverCertificate)"))
        #expect(output.stdout.contains("metrics_listener http 127.0.0.1:19998"))
        #expect(
            output.stdout.contains("connection cloud to 127.0.0.1:18997 127.0.0.1:18996 (mqttv311): sensors/# out 1")
        )
        #expect(output.stdout.contains("configuration ok"))
        #expect(!FileManager.default.fileExists(atPath: directory.file("tern.db")), "--check opened the store")
    }

    @Test(
        "a bad file: exit 3 with file:line: reason",
        arguments: [
            ("allow_anonymous true\nmax_qos 3\n", 2, "max_qos expects a whole number from 0 to 2, not '3'"),
            ("password_file /nonexistent/passwd\n", 1, "cannot read password_file /nonexistent/passwd"),
            ("listener 1883\nmount_point a/+\n", 2, "mount_point cannot contain the wildcards + or #"),
        ]
    )
    func bad(text: String, line: Int, reason: String) async throws {
        let directory = try TemporaryDirectory(prefix: "check")
        let output = try await check(text, in: directory)
        #expect(output.status == 3)
        #expect(output.stderr.contains("\(directory.file("tern.conf")):\(line): \(reason)"), "\(output.stderr)")
    }

    @Test(
        "a cluster node: its database is named, not connected to; a bad URL or password file is a problem on its line"
    )
    func cluster() async throws {
        let directory = try TemporaryDirectory(prefix: "check")
        let good = try await check(
            "listener 18995 127.0.0.1\ncluster_store postgresql://tern@db.example:5433/mqtt?schema=a\ncluster_node n1\n",
            in: directory
        )
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.stdout.contains("cluster node n1 on postgresql db.example:5433/mqtt, schema a"))
        let bad = try await check(
            "cluster_store postgresql://db.example/mqtt\ncluster_node n1\ncluster_password_file /nonexistent/pw\n",
            in: directory
        )
        #expect(bad.status == 3)
        #expect(
            bad.stderr.contains("\(directory.file("tern.conf")):1: postgresql://db.example/mqtt: a user name is needed")
        )
        #expect(
            bad.stderr.contains("\(directory.file("tern.conf")):1: cannot read cluster_password_file /nonexistent/pw")
        )
    }

    @Test("a certificate that does not load: exit 3 naming the listener's line")
    func badCertificate() async throws {
        let directory = try TemporaryDirectory(prefix: "check")
        let notPEM = directory.file("not-a-certificate.pem")
        try "hello".write(toFile: notPEM, atomically: true, encoding: .utf8)
        let output = try await check("listener 8883\ncertfile \(notPEM)\nkeyfile \(notPEM)\n", in: directory)
        #expect(output.status == 3)
        #expect(
            output.stderr.contains("\(directory.file("tern.conf")):1: listener mqtts :::8883 cannot load its TLS files")
        )
    }
}
