import Crypto
import Foundation
import _CryptoExtras

/// A Mosquitto password file: one `username:hash` per line (mosquitto_passwd's format).
///
/// Hashes are `$7$ROUNDS$SALT$HASH` (PBKDF2-SHA512, Mosquitto 2's default, 101 rounds and a
/// 12-byte salt) or the older `$6$SALT$HASH` (SHA-512 of password and salt), both base64. Files
/// made by `mosquitto_passwd` work unchanged, and `tern passwd` writes files Mosquitto accepts.
public struct PasswordFile: Sendable, Hashable {
    /// A line that could not be read, with where it is.
    public struct ParseError: Error, Hashable, CustomStringConvertible {
        public var file: String
        public var line: Int
        public var reason: String
        public var description: String { "\(file):\(line): \(reason)" }

        public init(file: String, line: Int, reason: String) {
            self.file = file
            self.line = line
            self.reason = reason
        }
    }

    /// The users, in file order, with their hash strings.
    public private(set) var entries: [(username: String, hash: String)] = []

    public static func == (lhs: PasswordFile, rhs: PasswordFile) -> Bool {
        lhs.entries.map { "\($0.username):\($0.hash)" } == rhs.entries.map { "\($0.username):\($0.hash)" }
    }

    public func hash(into hasher: inout Hasher) {
        for entry in entries { hasher.combine("\(entry.username):\(entry.hash)") }
    }

    public init() {}

    /// Parses the text of a password file. Blank lines and `#` comments are skipped.
    public init(parsing text: String, file: String) throws(ParseError) {
        var number = 0
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw ParseError(file: file, line: number, reason: "expected username:password-hash")
            }
            entries.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
        }
    }

    /// Reads a password file from disk.
    public static func load(path: String) throws -> PasswordFile {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try PasswordFile(parsing: text, file: path)
    }

    /// The file's text, one `username:hash` per line.
    public var text: String { entries.map { "\($0.username):\($0.hash)\n" }.joined() }

    /// Whether `password` is right for `username`. An unknown user costs the same work as a
    /// known one, so the answer's timing does not tell whether the user exists.
    public func verify(username: String, password: [UInt8]) -> Bool {
        guard let stored = entries.last(where: { $0.username == username })?.hash else {
            _ = Self.pbkdf2(password: password, salt: Array(repeating: 0, count: 12), rounds: Self.defaultRounds)
            return false
        }
        return Self.matches(password: password, hash: stored)
    }

    /// Sets (or adds) a user's password, hashed as Mosquitto 2 does by default.
    public mutating func set(username: String, password: [UInt8]) {
        let hash = Self.makeHash(password: password)
        if let index = entries.firstIndex(where: { $0.username == username }) {
            entries[index].hash = hash
        } else {
            entries.append((username, hash))
        }
    }

    /// Removes a user. Returns whether it existed.
    @discardableResult
    public mutating func remove(username: String) -> Bool {
        let before = entries.count
        entries.removeAll { $0.username == username }
        return entries.count != before
    }

    /// Replaces every plain-text password with its hash (mosquitto_passwd -U).
    public mutating func hashPlainTextPasswords() {
        for index in entries.indices where !entries[index].hash.hasPrefix("$") {
            entries[index].hash = Self.makeHash(password: Array(entries[index].hash.utf8))
        }
    }

    // MARK: Hashes

    static let defaultRounds = 101

    static func makeHash(password: [UInt8]) -> String {
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<12).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let hash = pbkdf2(password: password, salt: salt, rounds: defaultRounds)
        return "$7$\(defaultRounds)$\(Data(salt).base64EncodedString())$\(Data(hash).base64EncodedString())"
    }

    static func matches(password: [UInt8], hash: String) -> Bool {
        let fields = hash.split(separator: "$", omittingEmptySubsequences: false)
        // "$7$101$salt$hash" splits into ["", "7", "101", salt, hash].
        switch (fields.count, fields.first, fields.dropFirst().first) {
        case (5, "", "7"):
            guard let rounds = Int(fields[2]), rounds > 0, rounds <= 10_000_000,
                let salt = Data(base64Encoded: String(fields[3])), let expected = Data(base64Encoded: String(fields[4]))
            else { return false }
            let computed = pbkdf2(password: password, salt: Array(salt), rounds: rounds, length: expected.count)
            return constantTimeEqual(computed, Array(expected))
        case (4, "", "6"):
            guard let salt = Data(base64Encoded: String(fields[2])),
                let expected = Data(base64Encoded: String(fields[3]))
            else {
                return false
            }
            var hasher = SHA512()
            hasher.update(data: password)
            hasher.update(data: salt)
            return constantTimeEqual(Array(hasher.finalize()), Array(expected))
        default:
            return false
        }
    }

    static func pbkdf2(password: [UInt8], salt: [UInt8], rounds: Int, length: Int = 64) -> [UInt8] {
        // Mosquitto's 101 rounds are below swift-crypto's recommended minimum, hence the unchecked call:
        // compatibility with existing password files is the point.
        guard
            let key = try? KDF.Insecure.PBKDF2.deriveKey(
                from: password,
                salt: salt,
                using: .sha512,
                outputByteCount: length,
                unsafeUncheckedRounds: rounds
            )
        else { return [] }
        return key.withUnsafeBytes { Array($0) }
    }

    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count, !lhs.isEmpty else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(lhs, rhs) { difference |= a ^ b }
        return difference == 0
    }
}
