/// The store options of a configuration file, with Mosquitto's names and defaults where they
/// exist. The executable turns them into a store; the broker never sees them.
public struct PersistenceSettings: Sendable, Hashable {
    /// When the broker may acknowledge a message it stores (`persistence_durability`, Tern's own).
    public enum Durability: Sendable, Hashable {
        /// `commit`, the default: a PUBACK or PUBREC for a message any stored session will receive
        /// is sent once the batch holding it is committed and fsynced.
        case commit
        /// `loss_window`: acknowledge at once and commit every `autosave_interval` (or every
        /// `autosave_interval` changes with `autosave_on_changes true`), as Mosquitto saves. A crash
        /// loses what arrived since the last commit.
        case lossWindow
    }

    /// `persistence`: false by default, as in Mosquitto.
    public var enabled = false
    /// `persistence_location`: the directory of the store file; the working directory when empty.
    public var location = ""
    /// `persistence_file`: the store file's name. Not Mosquitto's `mosquitto.db`, so that the two
    /// brokers never read each other's files.
    public var file = "tern.db"
    /// `autosave_interval`: with `loss_window`, seconds between commits (or a change count, with
    /// `autosave_on_changes`). `nil` when not set: Tern then commits every second. Ignored by
    /// `commit`, which commits as soon as changes wait.
    public var autosaveInterval: Int?
    /// `autosave_on_changes`: read `autosave_interval` as a number of changes.
    public var autosaveOnChanges = false
    public var durability = Durability.commit

    public init() {}

    /// The store file's path: `persistence_location` joined with `persistence_file`.
    public var path: String {
        guard !location.isEmpty else { return file }
        return location.hasSuffix("/") ? location + file : location + "/" + file
    }
}
