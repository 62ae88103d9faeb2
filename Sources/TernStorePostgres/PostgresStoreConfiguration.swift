/// Where a ``PostgresStore`` keeps its rows: a PostgreSQL server, a database on it, and a schema
/// in that database (so that one database can hold several independent stores, as the tests do).
public struct PostgresStoreConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var username: String
    /// `nil` for a server that trusts the connection (a local socket, `trust` in `pg_hba.conf`).
    public var password: String?
    public var database: String
    /// The schema the tables live in; created if it does not exist.
    public var schema: String

    public init(
        host: String = "127.0.0.1",
        port: Int = 5432,
        username: String,
        password: String? = nil,
        database: String,
        schema: String = "tern"
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.schema = schema
    }

    /// Reads a connection URL, `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME]`
    /// (`postgres://` too). A password left out of the URL may be given as `password` (read from
    /// a file or the environment by the caller), so that a configuration file need not hold it.
    ///
    /// - Throws: ``PostgresStoreError`` naming what is wrong with the URL.
    public init(url: String, password: String? = nil) throws {
        var rest = Substring(url)
        guard let scheme = rest.range(of: "://") else {
            throw PostgresStoreError("\(url): not a postgresql:// URL")
        }
        guard ["postgresql", "postgres"].contains(rest[..<scheme.lowerBound]) else {
            throw PostgresStoreError("\(url): the scheme must be postgresql:// or postgres://")
        }
        rest = rest[scheme.upperBound...]
        var query: Substring = ""
        if let mark = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: mark)...]
            rest = rest[..<mark]
        }
        guard let at = rest.lastIndex(of: "@") else {
            throw PostgresStoreError("\(url): a user name is needed (postgresql://USER@HOST/DATABASE)")
        }
        let credentials = rest[..<at]
        rest = rest[rest.index(after: at)...]
        guard let slash = rest.firstIndex(of: "/"), rest.index(after: slash) < rest.endIndex else {
            throw PostgresStoreError("\(url): a database name is needed (postgresql://USER@HOST/DATABASE)")
        }
        let database = String(rest[rest.index(after: slash)...])
        let address = rest[..<slash]
        var host = String(address)
        var port = 5432
        if let colon = address.lastIndex(of: ":"), !address.hasSuffix("]") {
            guard let number = Int(address[address.index(after: colon)...]), (1...65535).contains(number) else {
                throw PostgresStoreError("\(url): the port must be a number from 1 to 65535")
            }
            port = number
            host = String(address[..<colon])
        }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw PostgresStoreError("\(url): a host is needed") }
        var username = String(credentials)
        var urlPassword: String?
        if let colon = credentials.firstIndex(of: ":") {
            username = String(credentials[..<colon])
            urlPassword = Self.percentDecoded(credentials[credentials.index(after: colon)...])
        }
        guard !username.isEmpty else { throw PostgresStoreError("\(url): the user name is empty") }
        var schema = "tern"
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0] == "schema" else {
                throw PostgresStoreError("\(url): unknown parameter \(pair) (only schema=NAME is read)")
            }
            schema = String(parts[1])
        }
        guard Self.isIdentifier(schema) else {
            throw PostgresStoreError("\(url): the schema must be letters, digits and underscores")
        }
        self.init(
            host: host,
            port: port,
            username: Self.percentDecoded(Substring(username)),
            password: urlPassword ?? password,
            database: database,
            schema: schema
        )
    }

    /// Whether `name` can name a schema without quoting.
    static func isIdentifier(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
            return false
        }
        return name.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "_")
        }
    }

    /// `%XX` escapes decoded, as URLs write a password with `@` or `:` in it.
    private static func percentDecoded(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var index = text.utf8.startIndex
        let utf8 = text.utf8
        while index < utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%"), let high = utf8.index(index, offsetBy: 1, limitedBy: utf8.endIndex),
                let low = utf8.index(index, offsetBy: 2, limitedBy: utf8.endIndex), low < utf8.endIndex,
                let value = UInt8(String(decoding: [utf8[high], utf8[low]], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                index = utf8.index(after: low)
            } else {
                bytes.append(byte)
                index = utf8.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Something a PostgreSQL store could not do, in words a user can act on.
public struct PostgresStoreError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
