import ArgumentParser
import Foundation
import NIOCore
import TernClient
import TernCodec

/// `tern pub`: publish messages, with mosquitto_pub's flags.
struct Pub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pub",
        abstract: "Publish a message, like mosquitto_pub.",
        helpNames: [.long]
    )

    @OptionGroup var connection: ClientOptions
    @Option(name: .customShort("t"), help: "Topic to publish to.") var topic: String
    @Option(name: .customShort("m"), help: "Message payload.") var message: String?
    @Option(name: .customShort("f"), help: "Send the contents of this file as the message.") var file: String?
    @Flag(name: .customShort("l"), help: "Send each line of standard input as a message.") var lines = false
    @Flag(name: .customShort("n"), help: "Send a zero-length message.") var null = false
    @Flag(name: .customShort("s"), help: "Send all of standard input as one message.") var stdinMessage = false
    @Option(name: .customShort("q"), help: "QoS: 0, 1 or 2.") var qos = 0
    @Flag(name: .customShort("r"), help: "Retain the message.") var retain = false
    @Option(name: .long, help: "Publish the message this many times.") var `repeat` = 1
    @Option(name: .long, help: "Seconds between repeats.") var repeatDelay: Double = 0

    func run() async throws {
        guard let qos = QoS(rawValue: UInt8(clamping: qos)) else { throw ValidationError("-q must be 0, 1 or 2") }
        let sources = [message != nil, file != nil, lines, null, stdinMessage].filter { $0 }.count
        guard sources == 1 else { throw ValidationError("give exactly one of -m, -f, -l, -n or -s") }
        let configuration = try connection.configuration(defaultPrefix: "tern_pub_")
        let properties = try connection.properties(for: "publish")
        let client = MQTTClient(configuration: configuration)
        do {
            try await client.connect()
        } catch {
            throw fail("\(error)")
        }
        do {
            if lines {
                while let line = readLine(strippingNewline: true) {
                    try await client.publish(
                        to: topic,
                        payload: ByteBuffer(string: line),
                        qos: qos,
                        retain: retain,
                        properties: properties
                    )
                }
            } else {
                let payload: ByteBuffer
                if let message {
                    payload = ByteBuffer(string: message)
                } else if let file {
                    guard let data = FileManager.default.contents(atPath: file) else {
                        throw fail("cannot read \(file)")
                    }
                    payload = ByteBuffer(bytes: data)
                } else if stdinMessage {
                    payload = ByteBuffer(bytes: FileHandle.standardInput.readDataToEndOfFile())
                } else {
                    payload = ByteBuffer()
                }
                for index in 0..<max(1, `repeat`) {
                    if index > 0, repeatDelay > 0 {
                        try await Task.sleep(for: .milliseconds(Int64(repeatDelay * 1000)))
                    }
                    try await client.publish(
                        to: topic,
                        payload: payload,
                        qos: qos,
                        retain: retain,
                        properties: properties
                    )
                }
            }
        } catch let error as ExitCode {
            throw error
        } catch {
            await client.disconnect()
            throw fail("\(error)")
        }
        // Messages resumed from --store complete before the tool exits, like mosquitto_pub's own.
        let deadline = ContinuousClock.now + .seconds(30)
        while await client.inflightCount > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        await client.disconnect()
    }
}
