import Foundation
public import TernBroker

/// Certificates made for one test with the `openssl` command: a private CA, a server certificate
/// for `localhost` and 127.0.0.1, client certificates, an expired one, and one from a CA nobody
/// trusts. They live in a temporary directory, are valid for a day, and trust nothing outside
/// the test: never commit such keys.
public struct FixtureCertificates: Sendable {
    public let directory: String

    public var caFile: String { directory + "/ca.crt" }
    public var serverCertificate: String { directory + "/server.crt" }
    public var serverKey: String { directory + "/server.key" }
    /// Common Name `alice`, signed by the CA.
    public var clientCertificate: String { directory + "/alice.crt" }
    public var clientKey: String { directory + "/alice.key" }
    /// Signed by the CA, expired in 2020.
    public var expiredCertificate: String { directory + "/expired.crt" }
    public var expiredKey: String { directory + "/expired.key" }
    /// Common Name `mallory`, signed by a CA the broker does not trust.
    public var strangerCertificate: String { directory + "/stranger.crt" }
    public var strangerKey: String { directory + "/stranger.key" }

    /// TLS with the server certificate; clients are not asked for one.
    public var serverTLS: TLSSettings {
        var settings = TLSSettings(certificateFile: serverCertificate, privateKeyFile: serverKey)
        settings.caFile = caFile
        return settings
    }

    /// TLS that requires a client certificate from the fixture CA and takes its Common Name as
    /// the user name (`require_certificate`, `use_identity_as_username`).
    public var clientCertificateTLS: TLSSettings {
        var settings = serverTLS
        settings.requireCertificate = true
        settings.useIdentityAsUsername = true
        return settings
    }

    /// Makes a fresh set in a new temporary directory. The `openssl` runs take a second or more
    /// on a busy machine, so they run on a thread of their own: waiting on the few threads every
    /// async test shares stalled unrelated tests past their connect timeouts.
    public static func make() async throws -> FixtureCertificates {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try makeBlocking() }) }.start()
        }
    }

    private static func makeBlocking() throws -> FixtureCertificates {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tern-certs-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let script = """
            set -e
            cd '\(directory)'
            key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1.key" 2>/dev/null; }
            key ca
            openssl req -x509 -new -key ca.key -subj '/CN=Tern Test CA' -days 1 -out ca.crt
            key other-ca
            openssl req -x509 -new -key other-ca.key -subj '/CN=Stranger CA' -days 1 -out other-ca.crt
            sign() { # name subject ca extensions
              key "$1"
              openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
              printf '%s\\n' "$4" > "$1.ext"
              openssl x509 -req -in "$1.csr" -CA "$3.crt" -CAkey "$3.key" -CAcreateserial -days 1 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
            }
            sign server '/CN=localhost' ca 'subjectAltName=DNS:localhost,IP:127.0.0.1'
            sign alice '/CN=alice' ca 'extendedKeyUsage=clientAuth'
            sign stranger '/CN=mallory' other-ca 'extendedKeyUsage=clientAuth'
            # An expired certificate needs explicit dates, which only `openssl ca` takes.
            key expired
            openssl req -new -key expired.key -subj '/CN=expired' -out expired.csr
            : > index.txt
            echo 1000 > serial
            printf '%s\\n' '[ca]' 'default_ca=d' '[d]' 'database=index.txt' 'new_certs_dir=.' 'serial=serial' \\
              'default_md=sha256' 'policy=p' '[p]' 'commonName=supplied' > ca.cnf
            openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in expired.csr -out expired.crt \\
              -startdate 20200101000000Z -enddate 20200102000000Z -notext 2>/dev/null
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let output = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw FixtureError(reason: "openssl failed: " + String(decoding: output, as: UTF8.self))
        }
        return FixtureCertificates(directory: directory)
    }

    /// Removes the directory.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}

struct FixtureError: Error, CustomStringConvertible {
    var reason: String
    var description: String { reason }
}
