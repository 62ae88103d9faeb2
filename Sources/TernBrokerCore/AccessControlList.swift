public import TernCodec

/// A Mosquitto ACL file: which topics each client may publish to and receive from.
///
/// The format is Mosquitto's `acl_file`:
///
/// ```
/// # anonymous clients (no user name): lines before the first `user`
/// topic read public/#
///
/// user alice
/// topic readwrite alice/#
/// topic deny alice/secret/#
///
/// # every client, wherever the line is; %c is the client identifier, %u the user name
/// pattern write devices/%c/status
/// ```
///
/// `topic` and `pattern` take `read`, `write`, `readwrite` (the default when the access is left
/// out) or `deny`, then a topic filter that may hold spaces. Anything not granted is refused; a
/// `deny` line wins over any grant. As in Mosquitto, a pattern whose `%c` or `%u` would put `+`,
/// `#` or `/` into the filter never matches, so a client cannot widen its own access by its name.
public struct AccessControlList: Sendable, Hashable {
    /// What a `topic` or `pattern` line grants: `deny` refuses whatever else would grant.
    public enum Access: String, Sendable, Hashable {
        case read, write, readwrite, deny

        var allowsRead: Bool { self == .read || self == .readwrite }
        var allowsWrite: Bool { self == .write || self == .readwrite }
    }

    /// One `topic` or `pattern` line.
    public struct Rule: Sendable, Hashable {
        /// What the line grants or refuses.
        public let access: Access
        /// The filter as written; for a pattern it may hold `%c` and `%u`.
        public let filter: String
        /// Its levels, split once here rather than at every check.
        let levels: [Substring]
        /// Whether any level holds `%`, so that only such patterns are filled in per client.
        let substitutes: Bool

        public init(access: Access, filter: String) {
            self.access = access
            self.filter = filter
            self.levels = filter.split(separator: "/", omittingEmptySubsequences: false)
            self.substitutes = levels.contains { $0.utf8.contains(UInt8(ascii: "%")) }
        }
    }

    /// A line that could not be read, with where it is.
    public struct ParseError: Error, Hashable, CustomStringConvertible {
        /// The ACL file, as it was named.
        public var file: String
        /// The line, counted from 1.
        public var line: Int
        /// What was expected there.
        public var reason: String
        public var description: String { "\(file):\(line): \(reason)" }
    }

    /// Rules for clients that connect without a user name.
    public private(set) var anonymousRules: [Rule] = []
    /// Rules per user name.
    public private(set) var userRules: [String: [Rule]] = [:]
    /// Patterns, for every client.
    public private(set) var patterns: [Rule] = []

    public init() {}

    /// Parses the text of an ACL file. `file` names it in errors.
    public init(parsing text: String, file: String) throws(ParseError) {
        var currentUser: String?
        var number = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            let line = raw.trimmingCharacters(in: " \t\r")
            if line.isEmpty || line.hasPrefix("#") { continue }
            let (keyword, rest) = line.splitFirstWord()
            switch keyword {
            case "user":
                guard !rest.isEmpty else { throw ParseError(file: file, line: number, reason: "user needs a user name") }
                currentUser = String(rest)
                if userRules[String(rest)] == nil { userRules[String(rest)] = [] }
            case "topic", "pattern":
                let rule = try Self.rule(keyword: keyword, rest, file: file, line: number)
                if keyword == "pattern" {
                    patterns.append(rule)
                } else if let currentUser {
                    userRules[currentUser, default: []].append(rule)
                } else {
                    anonymousRules.append(rule)
                }
            default:
                throw ParseError(file: file, line: number, reason: "expected user, topic or pattern, not '\(keyword)'")
            }
        }
    }

    private static func rule(keyword: Substring, _ rest: Substring, file: String, line: Int) throws(ParseError) -> Rule {
        guard !rest.isEmpty else {
            throw ParseError(file: file, line: line, reason: "\(keyword) needs a topic, optionally after read, write, readwrite or deny")
        }
        let (first, afterFirst) = rest.splitFirstWord()
        var access = Access.readwrite
        var filter = rest
        if let named = Access(rawValue: String(first)), !afterFirst.isEmpty {
            access = named
            filter = afterFirst
        }
        // The same syntax a SUBSCRIBE filter must follow (MQTT 5.0 §4.7.1), so that a typo is
        // found at start-up rather than silently matching nothing.
        do {
            _ = try TopicFilter(String(filter))
        } catch {
            throw ParseError(file: file, line: line, reason: "'\(filter)' is not a topic filter: \(error.reason)")
        }
        return Rule(access: access, filter: String(filter))
    }

    // MARK: Checks

    /// Whether a client may publish to `topic`.
    public func mayPublish(topic: String, clientID: String, username: String?) -> Bool {
        let topicLevels = topic.split(separator: "/", omittingEmptySubsequences: false)
        return check(clientID: clientID, username: username) {
            TopicFilter.matches(levels: $0, topicLevels: topicLevels)
        } grants: { $0.allowsWrite }
    }

    /// Whether a client may receive a message published to `topic`.
    public func mayReceive(topic: String, clientID: String, username: String?) -> Bool {
        mayReceive(topicLevels: topic.split(separator: "/", omittingEmptySubsequences: false), clientID: clientID, username: username)
    }

    /// The same for a topic split into its levels, so that a message checked for many
    /// subscribers is split once.
    public func mayReceive(topicLevels: [Substring], clientID: String, username: String?) -> Bool {
        check(clientID: clientID, username: username) {
            TopicFilter.matches(levels: $0, topicLevels: topicLevels)
        } grants: { $0.allowsRead }
    }

    /// Whether a client may subscribe to `filter` (its share name set aside): some read grant must
    /// cover every topic the filter can match, and no `deny` line may cover it. Messages on topics
    /// a granted filter reaches but a `deny` line refuses are held back one by one at delivery.
    public func maySubscribe(filter: TopicFilter, clientID: String, username: String?) -> Bool {
        let levels = filter.filter.split(separator: "/", omittingEmptySubsequences: false)
        return check(clientID: clientID, username: username) { $0.covers(filter: levels) } grants: { $0.allowsRead }
    }

    /// Runs `applies` over the client's rules with `%c` and `%u` filled in: a `deny` that applies
    /// refuses, otherwise a rule that applies and `grants` allows, otherwise it is refused.
    private func check(
        clientID: String,
        username: String?,
        _ applies: ([Substring]) -> Bool,
        grants: (Access) -> Bool
    ) -> Bool {
        var granted = false
        func consider(_ rule: Rule, levels: [Substring]) -> Bool {
            guard applies(levels) else { return true }
            if rule.access == .deny { return false }
            if grants(rule.access) { granted = true }
            return true
        }
        let own = username.map { userRules[$0] ?? [] } ?? anonymousRules
        for rule in own where !consider(rule, levels: rule.levels) { return false }
        for pattern in patterns {
            if !pattern.substitutes {
                if !consider(pattern, levels: pattern.levels) { return false }
                continue
            }
            guard let levels = pattern.substituted(clientID: clientID, username: username) else { continue }
            if !consider(pattern, levels: levels) { return false }
        }
        return granted
    }
}

extension AccessControlList.Rule {
    /// The pattern's levels with `%c` and `%u` filled in, or `nil` when it cannot apply: `%u`
    /// without a user name, or a value that holds a wildcard or a level separator.
    func substituted(clientID: String, username: String?) -> [Substring]? {
        var result: [Substring] = []
        result.reserveCapacity(levels.count)
        for level in levels {
            // A whole level of %c or %u, the usual case, needs no new string.
            if level == "%c" {
                guard Self.isSafe(clientID) else { return nil }
                result.append(Substring(clientID))
            } else if level == "%u" {
                guard let username, Self.isSafe(username) else { return nil }
                result.append(Substring(username))
            } else if level.utf8.contains(UInt8(ascii: "%")) {
                var filled = String(level)
                if filled.contains("%c") {
                    guard Self.isSafe(clientID) else { return nil }
                    filled = filled.replacing("%c", with: clientID)
                }
                if filled.contains("%u") {
                    guard let username, Self.isSafe(username) else { return nil }
                    filled = filled.replacing("%u", with: username)
                }
                result.append(Substring(filled))
            } else {
                result.append(level)
            }
        }
        return result
    }

    private static func isSafe(_ value: String) -> Bool {
        !value.utf8.contains { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") || $0 == UInt8(ascii: "/") }
    }
}

extension [Substring] {
    /// Whether every topic `filter` can match is matched by these filter levels.
    func covers(filter: [Substring]) -> Bool {
        if filter.first?.first == "$", let first = self.first, first == "+" || first == "#" { return false }
        var index = 0
        while index < count {
            let level = self[index]
            if level == "#" { return true }
            guard index < filter.count else { return false }
            let wanted = filter[index]
            switch level {
            case "+": if wanted == "#" { return false }
            default: if wanted != level { return false }
            }
            index += 1
        }
        return index == filter.count
    }
}

extension Substring {
    /// The first word and what follows the spaces after it.
    func splitFirstWord() -> (Substring, Substring) {
        guard let space = firstIndex(where: { $0 == " " || $0 == "\t" }) else { return (self, "") }
        let rest = self[space...].drop(while: { $0 == " " || $0 == "\t" })
        return (self[..<space], rest)
    }

    func trimmingCharacters(in set: String) -> Substring {
        var text = self
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return text
    }
}
