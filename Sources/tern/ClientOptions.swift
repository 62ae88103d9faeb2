import ArgumentParser
import Foundation
import NIOCore
import NIOSSL
import TernClient
import TernCodec

/// The connection flags mosquitto_pub and mosquitto_sub share, with their meanings.
struct ClientOptions: ParsableArguments {
    @Option(
        name: .customShort("h"),
        help: "Broker host (localhost). Repeat it for the nodes of a cluster: each is tried in turn."
    )
    var hosts: [String] = []
    @Option(name: .customShort("p"), help: "Broker port (1883; 8883 with TLS).") var port: Int?
    @Option(
        name: .long,
        help:
            "Broker URL instead of -h/-p: mqtt://, mqtts://, ws://HOST:PORT/PATH or wss://. Repeat it, or separate URLs with commas, for the nodes of a cluster."
    )
    var url: [String] = []

    /// The first -h, as mosquitto_pub reads one.
    var host: String { hosts.first ?? "localhost" }
    @Option(name: .long, help: "Trust the broker certificate if it chains to these PEM certificates; turns TLS on.")
    var cafile: String?
    @Option(name: .long, help: "Client certificate (PEM) to present; turns TLS on.") var cert: String?
    @Option(name: .long, help: "Private key (PEM) of --cert.") var key: String?
    @Flag(name: .long, help: "Do not check the broker certificate or its host name (testing only); turns TLS on.")
    var insecure = false
    @Option(name: .customShort("i"), help: "Client identifier.") var id: String?
    @Option(name: .customShort("I"), help: "Client identifier prefix; the process id is appended.") var idPrefix:
        String?
    @Flag(name: .customShort("c"), help: "Disable clean session / clean start: a persistent client.") var persistent =
        false
    @Option(name: .customShort("x"), help: "Session expiry interval in seconds (MQTT 5); -1 means never.")
    var sessionExpiry: Int64?
    @Option(name: .customShort("k"), help: "Keep alive in seconds.") var keepAlive: UInt16 = 60
    @Option(name: .customShort("u"), help: "User name.") var username: String?
    @Option(name: .customShort("P"), help: "Password.") var password: String?
    @Option(name: .customShort("V"), help: "Protocol version: mqttv5, mqttv311 or mqttv31 (or 5, 311, 31).")
    var protocolVersion = "mqttv311"
    @Flag(name: .customShort("d"), help: "Print debug messages.") var debug = false
    @Option(name: .long, help: "Will topic.") var willTopic: String?
    @Option(name: .long, help: "Will payload.") var willPayload: String?
    @Option(name: .long, help: "Will QoS.") var willQos = 0
    @Flag(name: .long, help: "Retain the will.") var willRetain = false
    @Option(
        name: .customShort("D"),
        parsing: .upToNextOption,
        help: "MQTT 5 property: -D COMMAND IDENTIFIER VALUE (user-property takes a name and a value)."
    )
    var properties: [String] = []
    @Option(name: .long, help: "Keep unacknowledged QoS 1/2 messages in this directory, across restarts.") var store:
        String?

    var version: ProtocolVersion {
        get throws {
            switch protocolVersion {
            case "mqttv5", "5": return .v5
            case "mqttv311", "311": return .v3_1_1
            case "mqttv31", "31": return .v3_1
            default: throw ValidationError("-V must be mqttv5, mqttv311 or mqttv31")
            }
        }
    }

    /// One -D: the command it applies to and the property.
    struct DefinedProperty {
        var command: String
        var property: Property
    }

    /// Parses the -D words: COMMAND IDENTIFIER VALUE [VALUE], repeated.
    func definedProperties() throws -> [DefinedProperty] {
        var words = properties[...]
        var result: [DefinedProperty] = []
        while let command = words.popFirst() {
            guard ["connect", "publish", "subscribe", "will", "disconnect", "auth", "unsubscribe"].contains(command),
                let identifier = words.popFirst(), let value = words.popFirst()
            else { throw ValidationError("-D expects COMMAND IDENTIFIER VALUE") }
            func number<T: FixedWidthInteger>(_: T.Type) throws -> T {
                guard let number = T(value) else {
                    throw ValidationError("-D \(identifier) expects a number, not '\(value)'")
                }
                return number
            }
            let property: Property
            switch identifier {
            case "content-type": property = .contentType(value)
            case "correlation-data": property = .correlationData(ByteBuffer(string: value))
            case "message-expiry-interval": property = .messageExpiryInterval(try number(UInt32.self))
            case "payload-format-indicator": property = .payloadFormatIndicator(isUTF8: try number(UInt8.self) == 1)
            case "response-topic": property = .responseTopic(value)
            case "session-expiry-interval": property = .sessionExpiryInterval(try number(UInt32.self))
            case "receive-maximum": property = .receiveMaximum(try number(UInt16.self))
            case "maximum-packet-size": property = .maximumPacketSize(try number(UInt32.self))
            case "topic-alias-maximum": property = .topicAliasMaximum(try number(UInt16.self))
            case "request-problem-information": property = .requestProblemInformation(try number(UInt8.self) == 1)
            case "request-response-information": property = .requestResponseInformation(try number(UInt8.self) == 1)
            case "will-delay-interval": property = .willDelayInterval(try number(UInt32.self))
            case "subscription-identifier": property = .subscriptionIdentifier(try number(UInt32.self))
            case "user-property":
                guard let second = words.popFirst() else {
                    throw ValidationError("-D \(command) user-property expects a name and a value")
                }
                property = .userProperty(name: value, value: second)
            default: throw ValidationError("-D: unknown property '\(identifier)'")
            }
            guard property.identifier.allowedIn.contains(Self.context(command)) else {
                throw ValidationError("-D: \(identifier) cannot be used with \(command)")
            }
            result.append(DefinedProperty(command: command, property: property))
        }
        return result
    }

    private static func context(_ command: String) -> PropertyContext {
        switch command {
        case "connect": return .connect
        case "publish": return .publish
        case "subscribe": return .subscribe
        case "will": return .will
        case "disconnect": return .disconnect
        case "unsubscribe": return .unsubscribe
        default: return .auth
        }
    }

    /// The client configuration these flags describe.
    func configuration(defaultPrefix: String) throws -> MQTTClientConfiguration {
        let pid = ProcessInfo.processInfo.processIdentifier
        let clientID = id ?? "\(idPrefix ?? defaultPrefix)\(pid)"
        var configuration: MQTTClientConfiguration
        let urls = url.flatMap { $0.split(separator: ",").map { String($0) } }
        if !urls.isEmpty {
            do {
                configuration = try MQTTClientConfiguration(urls: urls, clientID: clientID)
            } catch {
                throw ValidationError("--url: \(error.reasonString ?? "\(error)")")
            }
        } else {
            let usesTLS = cafile != nil || cert != nil || insecure
            let resolvedPort = port ?? (usesTLS ? 8883 : 1883)
            let names = (hosts.isEmpty ? ["localhost"] : hosts).map { $0 == "localhost" ? "127.0.0.1" : $0 }
            configuration = MQTTClientConfiguration(host: names[0], port: resolvedPort, clientID: clientID)
            configuration.alternateServers = names.dropFirst().map { ServerAddress(host: $0, port: resolvedPort) }
        }
        if let tls = try tlsConfiguration(base: configuration.tls) { configuration.tls = tls }
        configuration.protocolVersion = try version
        configuration.cleanStart = !persistent
        configuration.keepAlive = keepAlive
        configuration.username = username
        configuration.password = password.map { ByteBuffer(string: $0) }
        // One server: as mosquitto_pub and mosquitto_sub, a lost connection ends the command.
        // Several: the command goes on with the next one that accepts, resuming its session.
        if configuration.alternateServers.isEmpty { configuration.reconnect = nil }
        if let sessionExpiry {
            configuration.sessionExpiry = sessionExpiry < 0 ? .never : .seconds(UInt32(clamping: sessionExpiry))
        } else if persistent, configuration.protocolVersion == .v5 {
            // As mosquitto_sub: -c on MQTT 5 without -x asks for a session that never expires.
            configuration.sessionExpiry = .never
        }
        let defined = try definedProperties()
        for entry in defined where entry.command == "connect" {
            switch entry.property {
            case .sessionExpiryInterval(let value): configuration.connectProperties.sessionExpiryInterval = value
            case .receiveMaximum(let value): configuration.connectProperties.receiveMaximum = value
            case .maximumPacketSize(let value): configuration.connectProperties.maximumPacketSize = value
            case .topicAliasMaximum(let value): configuration.connectProperties.topicAliasMaximum = value
            case .requestProblemInformation(let value):
                configuration.connectProperties.requestProblemInformation = value
            case .requestResponseInformation(let value):
                configuration.connectProperties.requestResponseInformation = value
            case .userProperty(let name, let value):
                configuration.connectProperties.userProperties.append((name, value))
            default: break
            }
        }
        if let willTopic {
            guard let qos = QoS(rawValue: UInt8(clamping: willQos)) else {
                throw ValidationError("--will-qos must be 0, 1 or 2")
            }
            var willProperties = Properties()
            for entry in defined where entry.command == "will" { try willProperties.append(entry.property) }
            configuration.will = Connect.Will(
                topic: try TopicName(willTopic),
                payload: ByteBuffer(string: willPayload ?? ""),
                qos: qos,
                retain: willRetain,
                properties: willProperties
            )
        }
        if let store { configuration.store = try FileClientStore(directory: store) }
        return configuration
    }

    /// TLS from --cafile, --cert, --key and --insecure, on top of what --url asked for.
    private func tlsConfiguration(base: TLSConfiguration?) throws -> TLSConfiguration? {
        guard base != nil || cafile != nil || cert != nil || insecure else { return nil }
        var tls = base ?? .makeClientConfiguration()
        do {
            if let cafile { tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(cafile)) }
            if let cert {
                guard let key else { throw ValidationError("--cert needs --key") }
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
        } catch let error as ValidationError {
            throw error
        } catch {
            throw ValidationError("cannot load the TLS files: \(error)")
        }
        if insecure { tls.certificateVerification = .none }
        return tls
    }

    func properties(for command: String) throws -> Properties {
        var properties = Properties()
        for entry in try definedProperties() where entry.command == command { try properties.append(entry.property) }
        return properties
    }
}

/// Mosquitto's tools exit with 1 on connection and protocol errors.
func fail(_ message: String, code: Int32 = 1) -> ExitCode {
    FileHandle.standardError.write(Data("Error: \(message)\n".utf8))
    return ExitCode(code)
}
