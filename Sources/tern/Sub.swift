import ArgumentParser
import Foundation
import NIOCore
import TernClient
import TernCodec

/// `tern sub`: subscribe and print messages, with mosquitto_sub's flags and exit codes.
struct Sub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sub",
        abstract: "Subscribe and print messages, like mosquitto_sub.",
        helpNames: [.long]
    )

    @OptionGroup var connection: ClientOptions
    @Option(name: .customShort("t"), help: "Topic filter; may be repeated.") var topics: [String] = []
    @Option(name: .customShort("T"), help: "Topic to leave out of the output; may be repeated.") var filteredOut:
        [String] = []
    @Option(name: .customShort("q"), help: "QoS of the subscriptions.") var qos = 0
    @Option(name: .customShort("C"), help: "Exit after this many messages.") var count: Int?
    @Option(name: .customShort("W"), help: "Exit after this many seconds (status 27).") var timeout: Int?
    @Flag(name: .customShort("v"), help: "Print the topic before the payload.") var verbose = false
    @Option(
        name: .customShort("F"),
        help:
            "Output format: %t topic, %p payload, %q QoS, %r retain, %m id, %l length, %x hex payload, %C content type, %E expiry, %P user properties, %S subscription ids, %R response topic, %I ISO time, %U Unix time."
    ) var format: String?
    @Flag(name: .customShort("N"), help: "Do not print a newline after each message.") var noNewline = false
    @Flag(name: .customShort("R"), help: "Do not print stale (retained) messages.") var noRetained = false
    @Flag(name: .long, help: "Print only retained messages; exit at the first one that is not.") var retainedOnly =
        false
    @Flag(name: .customShort("E"), help: "Exit once the subscriptions are acknowledged.") var exitAfterSubscribe = false

    func run() async throws {
        guard !topics.isEmpty else { throw ValidationError("give at least one -t") }
        guard let qos = QoS(rawValue: UInt8(clamping: qos)) else { throw ValidationError("-q must be 0, 1 or 2") }
        let configuration = try connection.configuration(defaultPrefix: "tern_sub_")
        let client = MQTTClient(configuration: configuration)
        do {
            try await client.connect()
        } catch {
            throw fail("\(error)")
        }
        let (merged, sink) = AsyncStream<MQTTMessage>.makeStream()
        var feeders: [Task<Void, Never>] = []
        do {
            for topic in topics {
                let subscription = try await client.subscribe(to: topic, qos: qos)
                feeders.append(Task { for await message in subscription { sink.yield(message) } })
            }
        } catch {
            await client.disconnect()
            throw fail("\(error)")
        }
        if exitAfterSubscribe {
            await client.disconnect()
            return
        }
        var timedOut = false
        let timer: Task<Void, Never>? = timeout.map { seconds in
            Task {
                try? await Task.sleep(for: .seconds(seconds))
                if !Task.isCancelled { sink.finish() }
            }
        }
        var printed = 0
        for await message in merged {
            if filteredOut.contains(message.topic) { continue }
            if retainedOnly, !message.retain { break }
            if noRetained, message.retain { continue }
            // Written straight to the descriptor so that each message is visible at once, as with mosquitto_sub.
            FileHandle.standardOutput.write(Data((render(message) + (noNewline ? "" : "\n")).utf8))
            printed += 1
            if let count, printed >= count { break }
        }
        if let timeout, timer != nil, count.map({ printed < $0 }) ?? true, !retainedOnly {
            timedOut = printed < (count ?? Int.max) && timeout > 0
        }
        timer?.cancel()
        for feeder in feeders { feeder.cancel() }
        await client.disconnect()
        if timedOut {
            FileHandle.standardError.write(Data("Timed out\n".utf8))
            throw ExitCode(27)
        }
    }

    private func render(_ message: MQTTMessage) -> String {
        guard let format else { return verbose ? "\(message.topic) \(message.string)" : message.string }
        var output = ""
        var characters = Array(format)[...]
        while let character = characters.popFirst() {
            if character == "\\", let next = characters.popFirst() {
                switch next {
                case "n": output += "\n"
                case "t": output += "\t"
                case "\\": output += "\\"
                default: output += "\\\(next)"
                }
                continue
            }
            guard character == "%", let next = characters.popFirst() else {
                output.append(character)
                continue
            }
            let properties = message.properties
            switch next {
            case "t": output += message.topic
            case "p": output += message.string
            case "q": output += "\(message.qos.rawValue)"
            case "r": output += message.retain ? "1" : "0"
            case "m": output += "\(message.packetIdentifier)"
            case "l": output += "\(message.payload.readableBytes)"
            case "x":
                output += message.payload.readableBytesView.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }
                    .joined()
            case "C": if case .contentType(let type)? = properties.first(.contentType) { output += type }
            case "E": if let expiry = properties.messageExpiryInterval { output += "\(expiry)" }
            case "P": output += properties.userProperties.map { "\($0.name):\($0.value)" }.joined(separator: " ")
            case "S": output += message.subscriptionIdentifiers.map(String.init).joined(separator: ",")
            case "R": if case .responseTopic(let topic)? = properties.first(.responseTopic) { output += topic }
            case "I": output += ISO8601DateFormatter().string(from: Date())
            case "U": output += String(format: "%.6f", Date().timeIntervalSince1970)
            case "%": output += "%"
            default: output += "%\(next)"
            }
        }
        return output
    }
}
