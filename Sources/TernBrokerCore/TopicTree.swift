public import TernCodec

/// The subscriptions of every session, indexed by topic level (MQTT 5.0 §4.7, §4.8.2).
///
/// Matching walks the levels of a topic name once, following the exact level, `+` and `#` at each
/// step, so its cost grows with the depth of the topic and the number of matches, not with the
/// number of subscriptions. Topics starting with `$` are not matched by a wildcard in the first
/// level (§4.7.2). Shared subscriptions live in the same tree, grouped by share name, and each
/// group delivers one copy, round robin, preferring members that are connected.
public struct TopicTree: Sendable {
    /// One subscription of one session.
    public struct Entry: Sendable, Hashable {
        public var clientID: String
        public var options: SubscriptionOptions
        public var identifier: UInt32?

        public init(clientID: String, options: SubscriptionOptions, identifier: UInt32?) {
            self.clientID = clientID
            self.options = options
            self.identifier = identifier
        }
    }

    struct SharedGroup: Sendable {
        var members: [Entry] = []
        var cursor = 0
    }

    struct Node: Sendable {
        var children: [Substring: Node] = [:]
        var subscribers: [String: Entry] = [:]
        var shared: [String: SharedGroup] = [:]

        var isEmpty: Bool { children.isEmpty && subscribers.isEmpty && shared.isEmpty }
    }

    var root = Node()
    /// How many subscriptions the tree holds.
    public private(set) var count = 0

    public init() {}

    /// Adds or replaces the subscription of `entry.clientID` to `filter`.
    /// - Returns: whether a subscription to the same filter already existed (§3.8.4).
    @discardableResult
    public mutating func subscribe(_ filter: TopicFilter, entry: Entry) -> Bool {
        let existed = Self.insert(
            into: &root,
            levels: filter.filter.split(separator: "/", omittingEmptySubsequences: false)[...],
            shareName: filter.shareName,
            entry: entry
        )
        if !existed { count += 1 }
        return existed
    }

    private static func insert(into node: inout Node, levels: ArraySlice<Substring>, shareName: String?, entry: Entry)
        -> Bool
    {
        guard let level = levels.first else {
            if let shareName {
                var group = node.shared[shareName, default: SharedGroup()]
                defer { node.shared[shareName] = group }
                if let index = group.members.firstIndex(where: { $0.clientID == entry.clientID }) {
                    group.members[index] = entry
                    return true
                }
                group.members.append(entry)
                return false
            }
            return node.subscribers.updateValue(entry, forKey: entry.clientID) != nil
        }
        return insert(
            into: &node.children[level, default: Node()],
            levels: levels.dropFirst(),
            shareName: shareName,
            entry: entry
        )
    }

    /// Removes the subscription of `clientID` to `filter`.
    /// - Returns: whether it existed.
    @discardableResult
    public mutating func unsubscribe(_ filter: TopicFilter, clientID: String) -> Bool {
        let removed = Self.remove(
            from: &root,
            levels: filter.filter.split(separator: "/", omittingEmptySubsequences: false)[...],
            shareName: filter.shareName,
            clientID: clientID
        )
        if removed { count -= 1 }
        return removed
    }

    private static func remove(
        from node: inout Node,
        levels: ArraySlice<Substring>,
        shareName: String?,
        clientID: String
    ) -> Bool {
        guard let level = levels.first else {
            if let shareName {
                guard var group = node.shared[shareName],
                    let index = group.members.firstIndex(where: { $0.clientID == clientID })
                else { return false }
                group.members.remove(at: index)
                if group.cursor > index { group.cursor -= 1 }
                node.shared[shareName] = group.members.isEmpty ? nil : group
                return true
            }
            return node.subscribers.removeValue(forKey: clientID) != nil
        }
        guard var child = node.children[level] else { return false }
        let removed = remove(from: &child, levels: levels.dropFirst(), shareName: shareName, clientID: clientID)
        node.children[level] = child.isEmpty ? nil : child
        return removed
    }

    /// A matched subscription: the entry, and for shared subscriptions the group it was chosen from.
    public struct Match: Sendable, Hashable {
        public var entry: Entry
        public var isShared: Bool
    }

    /// Every subscription that matches `topic`. For each shared group that matches, one member is
    /// chosen round robin; `isConnected` lets the choice skip members that are offline.
    public mutating func match(_ topic: String, isConnected: (String) -> Bool) -> [Match] {
        var matches: [Match] = []
        let levels = topic.split(separator: "/", omittingEmptySubsequences: false)
        let isDollar = topic.utf8.first == UInt8(ascii: "$")
        Self.collect(
            &root,
            levels: levels[...],
            atRoot: true,
            isDollar: isDollar,
            into: &matches,
            isConnected: isConnected
        )
        return matches
    }

    private static func collect(
        _ node: inout Node,
        levels: ArraySlice<Substring>,
        atRoot: Bool,
        isDollar: Bool,
        into matches: inout [Match],
        isConnected: (String) -> Bool
    ) {
        let wildcardsAllowed = !(atRoot && isDollar)
        // `#` also matches the parent level itself (§4.7.1.2: "sport/#" matches "sport").
        if wildcardsAllowed, node.children["#"] != nil {
            take(&node.children["#"]!, into: &matches, isConnected: isConnected)
        }
        guard let level = levels.first else {
            take(&node, into: &matches, isConnected: isConnected)
            return
        }
        let rest = levels.dropFirst()
        if node.children[level] != nil {
            collect(
                &node.children[level]!,
                levels: rest,
                atRoot: false,
                isDollar: isDollar,
                into: &matches,
                isConnected: isConnected
            )
        }
        if wildcardsAllowed, level != "+", node.children["+"] != nil {
            collect(
                &node.children["+"]!,
                levels: rest,
                atRoot: false,
                isDollar: isDollar,
                into: &matches,
                isConnected: isConnected
            )
        }
    }

    private static func take(_ node: inout Node, into matches: inout [Match], isConnected: (String) -> Bool) {
        for entry in node.subscribers.values { matches.append(Match(entry: entry, isShared: false)) }
        for name in node.shared.keys {
            var group = node.shared[name]!
            let count = group.members.count
            var chosen: Int?
            for step in 0..<count {
                let index = (group.cursor + step) % count
                if isConnected(group.members[index].clientID) {
                    chosen = index
                    break
                }
            }
            let index = chosen ?? group.cursor % count
            matches.append(Match(entry: group.members[index], isShared: true))
            group.cursor = (index + 1) % count
            node.shared[name] = group
        }
    }
}
