import Testing

@testable import TernCodec

/// MQTT 5.0 §4.7 (topic names and filters) and §4.8.2 (shared subscriptions).
@Suite("Topic names and filters (§4.7, §4.8.2)")
struct TopicTests {
    @Test(
        "valid topic names",
        arguments: ["a", "a/b", "/", "//", "$SYS/broker/uptime", "a b/ü", "sport/tennis/player1"]
    )
    func validNames(name: String) throws {
        let topic = try TopicName(name)
        #expect(topic.string == name)
    }

    @Test(
        "topic names refuse wildcards, emptiness and U+0000 with 0x90",
        arguments: ["", "a/+", "#", "a/#", "a+b", "a\u{0}b"]
    )
    func invalidNames(name: String) {
        #expect(throws: TernError.self) { try TopicName(name) }
        do { _ = try TopicName(name) } catch { #expect(error.reasonCode == .topicNameInvalid) }
    }

    @Test("$-topics are recognised (§4.7.2)")
    func dollarTopics() throws {
        #expect(try TopicName("$SYS/x").isDollarTopic)
        #expect(try !TopicName("SYS/$x").isDollarTopic)
    }

    @Test(
        "valid filters",
        arguments: ["#", "+", "a/#", "a/+/b", "+/+", "/+", "a//b", "sport/tennis/#", "$SYS/#", "+/tennis/#"]
    )
    func validFilters(string: String) throws {
        let topicFilter = try TopicFilter(string)
        #expect(topicFilter.filter == string)
        #expect(topicFilter.shareName == nil)
    }

    @Test(
        "malformed filters are refused with 0x81 (§4.7.1)",
        arguments: ["", "a/#/b", "a#", "#/", "a/b#", "a+", "+a", "a/+b/c", "a\u{0}"]
    )
    func malformedFilters(string: String) {
        do {
            _ = try TopicFilter(string)
            Issue.record("'\(string)' was accepted")
        } catch {
            #expect(error.reasonCode == .malformedPacket)
        }
    }

    @Test("shared subscriptions are parsed into share name and filter")
    func sharedSubscription() throws {
        let shared = try TopicFilter("$share/consumers/sport/+/score")
        #expect(shared.isShared)
        #expect(shared.shareName == "consumers")
        #expect(shared.filter == "sport/+/score")
        #expect(shared.string == "$share/consumers/sport/+/score")
        #expect(shared.hasWildcards)
        let hashOnly = try TopicFilter("$share/g/#")
        #expect(hashOnly.filter == "#")
    }

    @Test(
        "malformed shared subscriptions are refused (§4.8.2 [MQTT-4.8.2-1], [MQTT-4.8.2-2])",
        arguments: ["$share/", "$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/#/a", "$share/g/a/#/b"]
    )
    func malformedShared(string: String) {
        #expect(throws: TernError.self) { try TopicFilter(string) }
    }

    @Test("a filter that only looks shared is an ordinary filter")
    func notShared() throws {
        #expect(try TopicFilter("$shared/a").shareName == nil)
        #expect(try TopicFilter("share/a/b").shareName == nil)
    }
}
