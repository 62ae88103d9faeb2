import Foundation
public import NIOSSL

/// TLS on a listener, with Mosquitto's option names: `certfile`, `keyfile`, `cafile`, `capath`,
/// `require_certificate`, `use_identity_as_username`, `tls_version` and `ciphers`.
public struct TLSSettings: Sendable, Hashable {
    /// The oldest TLS version accepted (`tls_version`, which Mosquitto 2 also reads as a minimum).
    public enum Version: String, Sendable, Hashable, CaseIterable {
        case tls1_1 = "tlsv1.1"
        case tls1_2 = "tlsv1.2"
        case tls1_3 = "tlsv1.3"

        var nio: TLSVersion {
            switch self {
            case .tls1_1: .tlsv11
            case .tls1_2: .tlsv12
            case .tls1_3: .tlsv13
            }
        }
    }

    /// `certfile`: the server's certificate chain, PEM.
    public var certificateFile: String
    /// `keyfile`: its private key, PEM.
    public var privateKeyFile: String
    /// `cafile`: the certificates that client certificates must chain to, PEM.
    public var caFile: String?
    /// `capath`: a directory of such certificates, one or more per PEM file.
    public var caPath: String?
    /// `require_certificate`: clients must present a certificate the CA files trust.
    public var requireCertificate = false
    /// `use_identity_as_username`: the client certificate's Common Name is the user name, and no
    /// password is asked for. A client without a certificate is refused.
    public var useIdentityAsUsername = false
    /// `tls_version`.
    public var minimumVersion: Version = .tls1_2
    /// `ciphers`: an OpenSSL cipher list for TLS 1.2 and older.
    public var ciphers: String?

    public init(certificateFile: String, privateKeyFile: String) {
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
    }

    /// Whether clients are asked for a certificate and refused without a trusted one.
    public var verifiesClients: Bool { requireCertificate || useIdentityAsUsername }

    /// Loads the files into a context that new connections share.
    public func makeContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: privateKeyFile, format: .pem))
        )
        configuration.minimumTLSVersion = minimumVersion.nio
        if let ciphers { configuration.cipherSuites = ciphers }
        if verifiesClients {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(try trustedCertificates())
        } else {
            configuration.certificateVerification = .none
        }
        return try NIOSSLContext(configuration: configuration)
    }

    private func trustedCertificates() throws -> [NIOSSLCertificate] {
        var certificates: [NIOSSLCertificate] = []
        if let caFile { certificates += try NIOSSLCertificate.fromPEMFile(caFile) }
        if let caPath {
            // A directory as Mosquitto's capath: every file in it that holds PEM certificates.
            for name in try FileManager.default.contentsOfDirectory(atPath: caPath).sorted() {
                if let found = try? NIOSSLCertificate.fromPEMFile(caPath + "/" + name) { certificates += found }
            }
        }
        guard !certificates.isEmpty else { throw TLSSettingsError.noCertificateAuthority }
        return certificates
    }
}

/// Why a listener's TLS settings could not be used.
public enum TLSSettingsError: Error, CustomStringConvertible {
    case noCertificateAuthority

    public var description: String {
        switch self {
        case .noCertificateAuthority:
            "require_certificate and use_identity_as_username need cafile or capath with at least one certificate"
        }
    }
}
