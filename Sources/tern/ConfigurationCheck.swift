import Foundation
import TernBridge
import TernBroker
import TernConfig
import TernStorePostgres

/// `tern serve --check`: what a configuration that parsed would do, and the problems that only
/// show when its files are loaded (a TLS certificate that is not PEM, a key that does not match).
/// Parsing has already read the password and ACL files and stopped at any bad line.
struct ConfigurationCheck {
    let configuration: MosquittoConfiguration
    /// `--data DIR`, which turns persistence on.
    let data: String?

    init(_ configuration: MosquittoConfiguration, data: String?) {
        self.configuration = configuration
        self.data = data
    }

    struct Report {
        /// What the broker would do, a line each.
        var lines: [String] = []
        /// `file:line: reason` for each problem; none means the configuration is good.
        var problems: [String] = []
    }

    func run() -> Report {
        var report = Report()
        let options = configuration.options
        for warning in configuration.warnings { report.lines.append("warning: \(warning)") }
        for (index, listener) in options.listeners.enumerated() {
            var line = "listener \(listener.name)"
            if listener.maxConnections >= 0 { line += ", max_connections \(listener.maxConnections)" }
            if let mountPoint = listener.mountPoint { line += ", mount_point \(mountPoint)" }
            if let tls = listener.tls {
                line += ", TLS with \(tls.certificateFile)"
                do {
                    _ = try tls.makeContext()
                } catch {
                    let origin =
                        index < configuration.listenerOrigins.count
                        ? configuration.listenerOrigins[index] : (file: "configuration", line: 0)
                    report.problems.append(
                        "\(origin.file):\(origin.line): listener \(listener.name) cannot load its TLS files: \(error)"
                    )
                }
            }
            report.lines.append(line)
        }
        for bridge in configuration.bridges {
            let topics = bridge.topics.map { "\($0.pattern) \($0.direction) \($0.qos.rawValue)" }.joined(
                separator: ", "
            )
            let version =
                switch bridge.protocolVersion {
                case .v5: "mqttv50"
                case .v3_1_1: "mqttv311"
                default: "mqttv31"
                }
            let addresses = bridge.addresses.map(\.description).joined(separator: " ")
            report.lines.append("connection \(bridge.name) to \(addresses) (\(version)): \(topics)")
            do {
                try MQTTBridge.validate(bridge)
            } catch {
                report.problems.append("connection \(bridge.name) cannot start: \(error)")
            }
        }
        if let metrics = options.metricsListener {
            report.lines.append("metrics_listener http \(metrics.host):\(metrics.port) (/metrics /health /ready)")
        }
        let cluster = configuration.cluster
        if let url = cluster.storeURL {
            // The URL is read, not connected to: --check opens no store.
            do {
                let database = try PostgresStoreConfiguration(url: url)
                report.lines.append(
                    "cluster node \(cluster.node ?? "?") on postgresql \(database.host):\(database.port)/\(database.database), schema \(database.schema)"
                )
            } catch {
                report.problems.append("\(configuration.clusterOrigin): \(error)")
            }
            if let file = cluster.passwordFile, !FileManager.default.isReadableFile(atPath: file) {
                report.problems.append("\(configuration.clusterOrigin): cannot read cluster_password_file \(file)")
            }
            report.lines.append(report.problems.isEmpty ? "configuration ok" : "configuration has problems")
            return report
        }
        var persistence = configuration.persistence
        if let data {
            persistence.enabled = true
            persistence.location = data
        }
        if persistence.enabled {
            report.lines.append("persistence \(persistence.path) (\(persistence.durability))")
            let directory = persistence.location.isEmpty ? "." : persistence.location
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
                if !isDirectory.boolValue || !FileManager.default.isWritableFile(atPath: directory) {
                    report.problems.append("persistence_location \(directory) is not a writable directory")
                }
            }
        } else {
            report.lines.append("persistence off: sessions are kept in memory only")
        }
        if options.memoryLimit > 0 { report.lines.append("memory_limit \(options.memoryLimit) bytes") }
        report.lines.append(report.problems.isEmpty ? "configuration ok" : "configuration has problems")
        return report
    }
}
