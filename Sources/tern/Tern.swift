import ArgumentParser

/// The `tern` command: the broker and its tools in one executable.
@main
struct Tern: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tern",
        abstract: "An MQTT 5.0 / 3.1.1 broker and its tools.",
        subcommands: [Serve.self, Pub.self, Sub.self, Passwd.self, Sessions.self, Bench.self, BenchStore.self]
    )
}
