import ArgumentParser
import Foundation
import TernBroker

/// `tern passwd`: manage password files, with mosquitto_passwd's flags and hash.
struct Passwd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "passwd",
        abstract: "Manage a password file, like mosquitto_passwd.",
        discussion: """
            tern passwd [-c | -D] FILE USERNAME         asks for the password
            tern passwd [-c] -b FILE USERNAME PASSWORD
            tern passwd -U FILE                         hashes plain-text passwords in place
            Hashes are PBKDF2-SHA512 ($7$), as Mosquitto 2 writes them.
            """
    )

    @Flag(name: .customShort("c"), help: "Create a new file, overwriting an existing one.") var create = false
    @Flag(name: .customShort("b"), help: "Take the password from the command line.") var batch = false
    @Flag(name: .customShort("D"), help: "Delete the user.") var delete = false
    @Flag(name: .customShort("U"), help: "Hash the plain-text passwords of the file.") var upgrade = false
    @Option(name: .customShort("H"), help: "Hash: sha512-pbkdf2 (the only one written).") var hash = "sha512-pbkdf2"
    @Argument(help: "FILE [USERNAME [PASSWORD]]") var arguments: [String] = []

    func run() throws {
        guard hash == "sha512-pbkdf2" else { throw ValidationError("-H: only sha512-pbkdf2 is written") }
        guard let path = arguments.first else { throw ValidationError("give a password file") }
        var file = PasswordFile()
        if !create {
            do {
                file = try PasswordFile.load(path: path)
            } catch {
                throw fail("cannot read \(path): \(error)")
            }
        }
        if upgrade {
            guard arguments.count == 1 else { throw ValidationError("-U takes only the file") }
            file.hashPlainTextPasswords()
        } else {
            guard arguments.count >= 2 else { throw ValidationError("give a username") }
            let username = arguments[1]
            guard !username.contains(":") else { throw ValidationError("a username cannot contain ':'") }
            if delete {
                guard file.remove(username: username) else { throw fail("user \(username) not found") }
            } else {
                let password: String
                if batch {
                    guard arguments.count == 3 else { throw ValidationError("-b needs FILE USERNAME PASSWORD") }
                    password = arguments[2]
                } else {
                    password = try Self.askPassword()
                }
                file.set(username: username, password: Array(password.utf8))
            }
        }
        guard
            FileManager.default.createFile(
                atPath: path,
                contents: Data(file.text.utf8),
                attributes: [.posixPermissions: 0o600]
            )
        else { throw fail("cannot write \(path)") }
    }

    /// Reads the password twice without echo, as mosquitto_passwd does.
    static func askPassword() throws -> String {
        guard let first = getpass("Password: ").map({ String(cString: $0) }) else { throw fail("no password given") }
        guard let second = getpass("Reenter password: ").map({ String(cString: $0) }), second == first else {
            throw fail("passwords do not match")
        }
        return first
    }
}
