import Foundation
import Logging
import Synchronization
public import TernBrokerCore

/// The password files in force: the broker-wide one and, under `per_listener_settings true`,
/// each listener's own. Replaced as a whole when they are reloaded.
struct PasswordFiles: Sendable {
    var global: PasswordFile?
    var perListener: [Int: PasswordFile] = [:]
}

extension AccessControlList {
    /// Reads an ACL file from disk.
    public static func load(path: String) throws -> AccessControlList {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try AccessControlList(parsing: text, file: path)
    }
}

extension MQTTBroker {
    /// The listener number whose own access settings apply to its clients, or `nil` when the
    /// broker-wide ones do.
    func policyListener(_ index: Int) -> Int? {
        guard options.listeners.indices.contains(index) else { return nil }
        return options.listeners[index].security == nil ? nil : index
    }

    /// The password file that applies to clients of a listener, if any.
    func passwordFile(forListener index: Int) -> PasswordFile? {
        passwordFiles.withLock { files in
            options.listeners[index].security == nil ? files.global : files.perListener[index]
        }
    }

    /// Reads the password and ACL files again from where they were loaded, as Mosquitto does on
    /// SIGHUP. Connections stay up; sessions are held to the new ACLs at once. A file that cannot
    /// be read or parsed keeps its old rules, with an error line.
    ///
    /// - Returns: the errors, one line each; empty when every file was reloaded.
    @discardableResult
    public func reloadSecurity() -> [String] {
        var errors: [String] = []
        func reload<Value>(_ path: String?, old: Value?, _ load: (String) throws -> Value) -> Value? {
            guard let path else { return old }
            do {
                return try load(path)
            } catch {
                errors.append("\(path): \(error); keeping the rules loaded before")
                return old
            }
        }
        var passwords = passwordFiles.withLock { $0 }
        let (oldACL, oldPolicies) = settings.accessControl
        passwords.global = reload(options.passwordFilePath, old: passwords.global, PasswordFile.load(path:))
        let accessControl = reload(options.accessControlPath, old: oldACL, AccessControlList.load(path:))
        var policies = oldPolicies
        for (index, listener) in options.listeners.enumerated() {
            guard let security = listener.security else { continue }
            passwords.perListener[index] = reload(
                security.passwordFilePath,
                old: passwords.perListener[index],
                PasswordFile.load(path:)
            )
            policies[index]?.accessControl = reload(
                security.accessControlPath,
                old: oldPolicies[index]?.accessControl,
                AccessControlList.load(path:)
            )
        }
        passwordFiles.withLock { $0 = passwords }
        settings.setAccessControl(accessControl, listenerPolicies: policies)
        for shard in shards.all {
            withState(on: shard) { state in
                state.reloadAccess(accessControl: accessControl, listenerPolicies: policies)
                return []
            }
        }
        for error in errors { logger.error("reload failed", metadata: ["detail": "\(error)"]) }
        logger.info("password and ACL files reloaded", metadata: ["errors": "\(errors.count)"])
        return errors
    }
}
