// swift-tools-version:6.1
import PackageDescription

// Layering (see README "Layout"): codec <- broker core <- broker <- config <- executable, and codec <- client;
// TernTransport (WebSocket framing) is shared by broker and client, which never depend on each other.
// The broker never names SQLite; only the executable chooses a store.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Tern",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "TernCodec", targets: ["TernCodec"]),
        .library(name: "TernBrokerCore", targets: ["TernBrokerCore"]),
        .library(name: "TernStore", targets: ["TernStore"]),
        .library(name: "TernStoreSQLite", targets: ["TernStoreSQLite"]),
        .library(name: "TernStorePostgres", targets: ["TernStorePostgres"]),
        .library(name: "TernBroker", targets: ["TernBroker"]),
        .library(name: "TernConfig", targets: ["TernConfig"]),
        .library(name: "TernBrokerTesting", targets: ["TernBrokerTesting"]),
        .library(name: "TernClient", targets: ["TernClient"]),
        .library(name: "TernTransport", targets: ["TernTransport"]),
        .library(name: "TernBridge", targets: ["TernBridge"]),
        .executable(name: "tern", targets: ["tern"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        .target(
            name: "TernCodec",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernBrokerCore",
            dependencies: [
                "TernCodec",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernStore",
            dependencies: ["TernBrokerCore", "TernCodec", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernStoreSQLite",
            dependencies: [
                "TernStore",
                "TernBrokerCore",
                "TernCodec",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernStorePostgres",
            dependencies: [
                "TernStore",
                "TernBrokerCore",
                "TernCodec",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernTransport",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernBroker",
            dependencies: [
                "TernBrokerCore",
                "TernCodec",
                "TernTransport",
                "TernStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernBridge",
            dependencies: [
                "TernBroker",
                "TernClient",
                "TernCodec",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernBrokerTesting",
            dependencies: [
                "TernBroker",
                "TernBrokerCore",
                "TernCodec",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernConfig",
            dependencies: ["TernBroker", "TernBrokerCore", "TernBridge", "TernCodec"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TernClient",
            dependencies: [
                "TernCodec",
                "TernTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "tern",
            dependencies: [
                "TernBridge",
                "TernConfig",
                "TernStoreSQLite",
                "TernStorePostgres",
                "TernClient",
                "TernBroker",
                "TernCodec",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TernBrokerCoreTests",
            dependencies: [
                "TernBrokerCore",
                "TernBrokerTesting",
                "TernCodec",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TernBridgeTests",
            dependencies: ["TernBridge", "TernCodec"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TernStoreTests",
            dependencies: [
                "TernStore",
                "TernBrokerCore",
                "TernCodec",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TernStoreSQLiteTests",
            dependencies: [
                "TernStoreSQLite",
                "TernStorePostgres",
                "TernStore",
                "TernBrokerCore",
                "TernBrokerTesting",
                "TernCodec",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "TernBroker",
                "TernClient",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                "TernStoreSQLite",
                "TernStore",
                "TernBrokerTesting",
                "TernBrokerCore",
                "TernCodec",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TernBrokerTests",
            dependencies: [
                "TernBroker",
                "TernBrokerCore",
                "TernCodec",
                "TernStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TernTransportTests",
            dependencies: [
                "TernTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "InteropTests",
            dependencies: [
                "TernBridge",
                "TernBroker",
                "TernBrokerCore",
                "TernBrokerTesting",
                "TernClient",
                "TernCodec",
                "TernStoreSQLite",
                "TernStorePostgres",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            resources: [.copy("Scripts")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TernConfigTests",
            dependencies: ["TernConfig", "TernBroker", "TernBrokerCore", "TernBridge", "TernCodec"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TernClientTests",
            dependencies: [
                "TernClient",
                "TernCodec",
                "TernBroker",
                "TernBrokerTesting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TernCodecTests",
            dependencies: [
                "TernCodec",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
