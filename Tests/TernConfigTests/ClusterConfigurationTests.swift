import TernConfig
import Testing

/// Tern's own cluster options in a mosquitto.conf-style file.
@Suite("Cluster options")
struct ClusterConfigurationTests {
    @Test("cluster_store, cluster_node and cluster_password_file are read; persistence is ignored beside them")
    func options() throws {
        let configuration = try MosquittoConfiguration.parse(
            """
            listener 1883 127.0.0.1
            persistence true
            cluster_store postgresql://tern@db.example:5433/mqtt?schema=tern_a
            cluster_node node-a
            cluster_password_file /etc/tern/db-password
            """,
            file: "node.conf"
        )
        #expect(configuration.cluster.isEnabled)
        #expect(configuration.cluster.storeURL == "postgresql://tern@db.example:5433/mqtt?schema=tern_a")
        #expect(configuration.cluster.node == "node-a")
        #expect(configuration.cluster.passwordFile == "/etc/tern/db-password")
        #expect(configuration.warnings.contains { $0.hasPrefix("node.conf:3:") && $0.contains("ignored") })
    }

    @Test(
        "a bad cluster line names the file, the line and the reason",
        arguments: [
            ("cluster_store mysql://db/x\ncluster_node a", 1, "cluster_store expects a postgresql:// URL"),
            (
                "listener 1883\ncluster_store postgresql://u@db/x", 2,
                "cluster_store needs cluster_node NAME, this node's name"
            ),
            ("cluster_node a b", 1, "cluster_node takes exactly one value"),
        ]
    )
    func badLines(_ text: String, _ line: Int, _ reason: String) {
        #expect(throws: ConfigurationError(file: "bad.conf", line: line, reason: reason)) {
            try MosquittoConfiguration.parse(text, file: "bad.conf")
        }
    }

    @Test("without cluster_store there is no cluster")
    func none() throws {
        #expect(!(try MosquittoConfiguration.parse("listener 1883", file: "a.conf").cluster.isEnabled))
    }
}
