import Foundation
import TernBroker
import TernBrokerCore
import Testing

@testable import TernConfig

/// `listener` blocks with their own settings, TLS options, `protocol`, `per_listener_settings`
/// and `acl_file`, read as Mosquitto reads them.
@Suite("mosquitto.conf listeners and security")
struct ListenerConfigurationTests {
    /// Files the options point at, made for one test: TLS options are checked to be readable.
    struct Files: ~Copyable {
        let directory: String
        init(_ files: [String: String]) throws {
            directory =
                FileManager.default.temporaryDirectory.appendingPathComponent("tern-conf-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            for (name, text) in files {
                try text.write(toFile: directory + "/" + name, atomically: true, encoding: .utf8)
            }
        }
        deinit { try? FileManager.default.removeItem(atPath: directory) }
        func path(_ name: String) -> String { directory + "/" + name }
    }

    @Test("each listener takes the options after it: protocol, TLS files, versions and client certificates")
    func listenerBlocks() throws {
        let files = try Files(["server.crt": "c", "server.key": "k", "ca.crt": "a"])
        let text = """
            listener 1883 127.0.0.1
            listener 8883
            certfile \(files.path("server.crt"))
            keyfile \(files.path("server.key"))
            cafile \(files.path("ca.crt"))
            require_certificate true
            use_identity_as_username true
            tls_version tlsv1.3
            ciphers ECDHE-ECDSA-AES128-GCM-SHA256
            listener 9001
            protocol websockets
            listener 0 /run/tern/tern.sock
            """
        let options = try MosquittoConfiguration.parse(text, file: "tern.conf").options
        #expect(options.listeners.count == 4)
        #expect(options.listeners[0] == .init(host: "127.0.0.1", port: 1883))
        let tls = try #require(options.listeners[1].tls)
        #expect(options.listeners[1].host == BrokerOptions.Listener.allAddresses)
        #expect(tls.certificateFile == files.path("server.crt"))
        #expect(tls.privateKeyFile == files.path("server.key"))
        #expect(tls.caFile == files.path("ca.crt"))
        #expect(tls.requireCertificate && tls.useIdentityAsUsername)
        #expect(tls.minimumVersion == .tls1_3)
        #expect(tls.ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256")
        #expect(options.listeners[2].transport == .webSockets)
        #expect(options.listeners[2].tls == nil)
        #expect(options.listeners[3].unixSocketPath == "/run/tern/tern.sock")
        #expect(options.listeners.allSatisfy { $0.security == nil })
        #expect(!options.broker.allowAnonymous)  // Mosquitto 2: a configured listener needs allow_anonymous true
    }

    @Test(
        "without per_listener_settings, allow_anonymous, password_file and acl_file are broker-wide wherever they are"
    )
    func globalSecurity() throws {
        let files = try Files(["passwd": "alice:$7$101$x$y\n", "acl": "user alice\ntopic alice/#\n"])
        let text = """
            listener 1883
            listener 1884
            allow_anonymous true
            password_file \(files.path("passwd"))
            acl_file \(files.path("acl"))
            """
        let options = try MosquittoConfiguration.parse(text, file: "tern.conf").options
        #expect(options.broker.allowAnonymous)
        #expect(options.passwordFile?.entries.map(\.username) == ["alice"])
        #expect(options.passwordFilePath == files.path("passwd"))
        #expect(options.accessControl?.userRules["alice"]?.count == 1)
        #expect(options.accessControlPath == files.path("acl"))
        #expect(options.listeners.allSatisfy { $0.security == nil })
    }

    @Test("per_listener_settings true: each listener has its own; anonymous is off unless its block allows it")
    func perListenerSecurity() throws {
        let files = try Files(["passwd": "bob:$7$101$x$y\n", "acl": "topic read public/#\n"])
        let text = """
            listener 1883 127.0.0.1
            allow_anonymous true
            acl_file \(files.path("acl"))
            listener 8883
            password_file \(files.path("passwd"))
            per_listener_settings true
            """
        let options = try MosquittoConfiguration.parse(text, file: "tern.conf").options
        let local = try #require(options.listeners[0].security)
        let remote = try #require(options.listeners[1].security)
        #expect(local.allowAnonymous)
        #expect(local.accessControlPath == files.path("acl"))
        #expect(local.passwordFile == nil)
        #expect(!remote.allowAnonymous)
        #expect(remote.passwordFile?.entries.map(\.username) == ["bob"])
        #expect(remote.accessControl == nil)
        #expect(options.passwordFile == nil && options.accessControl == nil)
    }

    @Test("TLS options before the first listener belong to the port listener")
    func defaultListenerTLS() throws {
        let files = try Files(["c": "c", "k": "k"])
        let options = try MosquittoConfiguration.parse(
            "port 8883\ncertfile \(files.path("c"))\nkeyfile \(files.path("k"))\n",
            file: "a.conf"
        ).options
        #expect(options.listeners.map(\.port) == [8883])
        #expect(options.listeners[0].tls?.certificateFile == files.path("c"))
    }

    @Test("a bad listener or security line names the file, the line and the reason")
    func badLines() throws {
        let files = try Files(["c": "c", "k": "k", "acl": "topic read a\nallow everything\n"])
        let cases: [(String, Int, String)] = [
            ("listener 1883\nprotocol carrier-pigeon", 2, "protocol expects mqtt or websockets, not 'carrier-pigeon'"),
            ("listener 8883\ncertfile /nonexistent/server.crt", 2, "certfile /nonexistent/server.crt cannot be read"),
            (
                "listener 8883\n\ncertfile \(files.path("c"))", 3,
                "certfile needs certfile and keyfile in the same listener"
            ),
            ("listener 8883\ntls_version sslv3", 2, "tls_version expects tlsv1.3, tlsv1.2 or tlsv1.1, not 'sslv3'"),
            (
                "listener 8883\ncertfile \(files.path("c"))\nkeyfile \(files.path("k"))\nrequire_certificate true", 4,
                "require_certificate needs cafile or capath to check client certificates against"
            ),
            (
                "acl_file \(files.path("acl"))", 1,
                "acl_file \(files.path("acl")) is not an ACL file: \(files.path("acl")):2: expected user, topic or pattern, not 'allow'"
            ),
            (
                "acl_file /nonexistent/acl", 1,
                "cannot read acl_file /nonexistent/acl: The operation could not be completed. The file doesn’t exist."
            ),
            ("per_listener_settings sometimes", 1, "per_listener_settings expects true or false, not 'sometimes'"),
        ]
        for (text, line, reason) in cases {
            #expect(throws: ConfigurationError(file: "bad.conf", line: line, reason: reason), "\(text)") {
                try MosquittoConfiguration.parse(text, file: "bad.conf")
            }
        }
    }
}
