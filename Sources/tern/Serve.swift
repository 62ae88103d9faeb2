import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import TernBroker
import TernConfig

/// `tern serve`: runs the broker.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the MQTT broker.",
        discussion: """
            With no arguments the broker listens on port 1883 on the loopback addresses and allows
            anonymous clients, like Mosquitto 2 without a configuration file.
            """
    )

    @Option(name: .shortAndLong, help: "Listen on this port on the loopback addresses (or on the -c listeners' place).")
    var port: Int?

    @Option(name: [.customShort("c"), .long], help: "A mosquitto.conf-style configuration file.")
    var config: String?

    @Flag(name: .shortAndLong, help: "Log every connection event.")
    var verbose = false

    func run() async throws {
        var configuration = MosquittoConfiguration()
        if let config {
            let text: String
            do {
                text = try String(contentsOfFile: config, encoding: .utf8)
            } catch {
                throw ValidationError("cannot read \(config): \(error.localizedDescription)")
            }
            do {
                configuration = try MosquittoConfiguration.parse(text, file: config)
            } catch {
                FileHandle.standardError.write(Data("tern: \(error)\n".utf8))
                throw ExitCode(3)
            }
        }
        if let port {
            let hosts = config == nil ? ["127.0.0.1", "::1"] : Array(Set(configuration.options.listeners.map(\.host)))
            configuration.options.listeners = hosts.map { .init(host: $0, port: port) }
        }
        let level: Logger.Level = verbose || configuration.logTypes.contains("all") ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "tern")
        logger.logLevel = level
        for warning in configuration.warnings { logger.warning("\(warning)") }

        let broker = MQTTBroker(options: configuration.options, logger: logger)
        let group = ServiceGroup(
            configuration: .init(services: [broker], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
    }
}
