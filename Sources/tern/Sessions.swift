import ArgumentParser
import Foundation
import TernConfig
import TernStoreSQLite

/// `tern sessions`: lists the sessions in a store file, safely while the broker runs.
struct Sessions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the sessions kept in a store.",
        discussion: """
            Reads the store named by -c's persistence_location and persistence_file, or by --store.
            It opens the file read-only; the broker may keep running.
            """
    )

    @Option(name: [.customShort("c"), .long], help: "A mosquitto.conf-style configuration file.")
    var config: String?

    @Option(name: .long, help: "The store file (for example DIR/tern.db after `tern serve --data DIR`).")
    var store: String?

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, tsv
    }

    @Option(help: "table: aligned columns (the default on a terminal); tsv: tab-separated (the default otherwise).")
    var format: Format?

    func run() throws {
        let path: String
        if let store {
            path = store
        } else if let config {
            let text = try String(contentsOfFile: config, encoding: .utf8)
            do {
                path = try MosquittoConfiguration.parse(text, file: config).persistence.path
            } catch {
                FileHandle.standardError.write(Data("tern: \(error)\n".utf8))
                throw ExitCode(3)
            }
        } else {
            throw ValidationError("name the store with --store PATH or -c FILE")
        }
        guard FileManager.default.fileExists(atPath: path) else {
            FileHandle.standardError.write(Data("tern: no store at \(path)\n".utf8))
            throw ExitCode(1)
        }
        let listing = try StoreListing.read(path: path)
        let aligned = (format ?? (isatty(STDOUT_FILENO) != 0 ? .table : .tsv)) == .table
        print(listing.table(now: Date(), aligned: aligned))
    }
}
