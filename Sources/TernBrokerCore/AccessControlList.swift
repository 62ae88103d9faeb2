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
        /// The same levels sorted into what they match, so that a topic is checked without
        /// allocating: this runs for every PUBLISH and every delivery when an ACL is set.
        let kinds: [LevelKind]

        enum LevelKind: Sendable, Hashable {
            case literal(Substring)
            case singleLevel
            case multiLevel
            case clientID
            case username
            /// A level with `%c` or `%u` among other text, filled in when checked.
            case template(Substring)
        }

        public init(access: Access, filter: String) {
            self.access = access
            self.filter = filter
            self.levels = filter.split(separator: "/", omittingEmptySubsequences: false)
            self.kinds = levels.map { level in
                switch level {
                case "+": .singleLevel
                case "#": .multiLevel
                case "%c": .clientID
                case "%u": .username
                default: level.utf8.contains(UInt8(ascii: "%")) ? .template(level) : .literal(level)
                }
            }
        }

        /// Whether any level is filled in per client.
        var substitutes: Bool {
            kinds.contains { kind in
                switch kind {
                case .clientID, .username, .template: true
                default: false
                }
            }
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
                guard !rest.isEmpty else {
                    throw ParseError(file: file, line: number, reason: "user needs a user name")
                }
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

    private static func rule(keyword: Substring, _ rest: Substring, file: String, line: Int) throws(ParseError) -> Rule
    {
        guard !rest.isEmpty else {
            throw ParseError(
                file: file,
                line: line,
                reason: "\(keyword) needs a topic, optionally after read, write, readwrite or deny"
            )
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
        check(clientID: clientID, username: username) {
            $0.matches(topic: topic, clientID: clientID, username: username)
        } grants: {
            $0.allowsWrite
        }
    }

    /// Whether a client may receive a message published to `topic`.
    public func mayReceive(topic: String, clientID: String, username: String?) -> Bool {
        check(clientID: clientID, username: username) {
            $0.matches(topic: topic, clientID: clientID, username: username)
        } grants: {
            $0.allowsRead
        }
    }

    /// Whether a client may subscribe to `filter` (its share name set aside): some read grant must
    /// cover every topic the filter can match, and no `deny` line may cover it. Messages on topics
    /// a granted filter reaches but a `deny` line refuses are held back one by one at delivery.
    public func maySubscribe(filter: TopicFilter, clientID: String, username: String?) -> Bool {
        let levels = filter.filter.split(separator: "/", omittingEmptySubsequences: false)
        return check(clientID: clientID, username: username) { rule in
            guard
                let ruleLevels = rule.substitutes
                    ? rule.substituted(clientID: clientID, username: username) : rule.levels
            else {
                return false
            }
            return ruleLevels.covers(filter: levels)
        } grants: {
            $0.allowsRead
        }
    }

    /// Runs `applies` over the client's rules and the patterns: a `deny` that applies refuses,
    /// otherwise a rule that applies and `grants` allows, otherwise it is refused.
    private func check(
        clientID: String,
        username: String?,
        _ applies: (Rule) -> Bool,
        grants: (Access) -> Bool
    ) -> Bool {
        var granted = false
        /// `false` when a `deny` applies.
        func consider(_ rules: [Rule]) -> Bool {
            for rule in rules where applies(rule) {
                if rule.access == .deny { return false }
                if grants(rule.access) { granted = true }
            }
            return true
        }
        let own = username.map { userRules[$0] ?? [] } ?? anonymousRules
        guard consider(own), consider(patterns) else { return false }
        return granted
    }
}

extension AccessControlList.Rule {
    /// Whether this rule, with `%c` and `%u` filled in, matches a topic name (MQTT 5.0 §4.7),
    /// reading the topic in place. A wildcard first level never matches a `$` topic (§4.7.2).
    func matches(topic: String, clientID: String, username: String?) -> Bool {
        let bytes = topic.utf8
        if bytes.first == UInt8(ascii: "$"), let first = kinds.first, first == .singleLevel || first == .multiLevel {
            return false
        }
        // The start of the next topic level, or nil once the last level has been read.
        var position: String.UTF8View.Index? = bytes.startIndex
        for kind in kinds {
            if kind == .multiLevel { return true }  // `#` also matches the parent level (§4.7.1.2)
            guard let start = position else { return false }
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "/")) ?? bytes.endIndex
            let level = bytes[start..<end]
            position = end == bytes.endIndex ? nil : bytes.index(after: end)
            switch kind {
            case .singleLevel, .multiLevel:
                continue
            case .literal(let text):
                guard text.utf8.elementsEqual(level) else { return false }
            case .clientID:
                guard Self.isSafe(clientID), clientID.utf8.elementsEqual(level) else { return false }
            case .username:
                guard let username, Self.isSafe(username), username.utf8.elementsEqual(level) else { return false }
            case .template(let text):
                guard let filled = Self.fill(text, clientID: clientID, username: username),
                    filled.utf8.elementsEqual(level)
                else { return false }
            }
        }
        return position == nil
    }

    /// The pattern's levels with `%c` and `%u` filled in, or `nil` when it cannot apply: `%u`
    /// without a user name, or a value that holds a wildcard or a level separator.
    func substituted(clientID: String, username: String?) -> [Substring]? {
        var result: [Substring] = []
        result.reserveCapacity(levels.count)
        for (level, kind) in zip(levels, kinds) {
            switch kind {
            case .clientID:
                guard Self.isSafe(clientID) else { return nil }
                result.append(Substring(clientID))
            case .username:
                guard let username, Self.isSafe(username) else { return nil }
                result.append(Substring(username))
            case .template(let text):
                guard let filled = Self.fill(text, clientID: clientID, username: username) else { return nil }
                result.append(Substring(filled))
            case .literal, .singleLevel, .multiLevel:
                result.append(level)
            }
        }
        return result
    }

    /// A level with `%c` or `%u` inside other text, filled in; `nil` when it cannot apply.
    static func fill(_ text: Substring, clientID: String, username: String?) -> String? {
        var filled = String(text)
        if filled.contains("%c") {
            guard isSafe(clientID) else { return nil }
            filled = filled.replacing("%c", with: clientID)
        }
        if filled.contains("%u") {
            guard let username, isSafe(username) else { return nil }
            filled = filled.replacing("%u", with: username)
        }
        return filled
    }

    static func isSafe(_ value: String) -> Bool {
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
