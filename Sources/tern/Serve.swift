import ArgumentParser

/// `tern serve`: runs the broker.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the MQTT broker.")

    @Option(name: .shortAndLong, help: "Listen on this port.")
    var port: Int?

    @Option(name: [.customShort("c"), .long], help: "A mosquitto.conf-style configuration file.")
    var config: String?

    @Flag(name: .shortAndLong, help: "Verbose logging.")
    var verbose = false

    func run() async throws {
        print("tern serve: the broker is not built yet; this release contains the MQTT packet codec.")
        throw ExitCode(2)
    }
}
