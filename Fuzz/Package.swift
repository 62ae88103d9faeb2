// swift-tools-version:6.1
import PackageDescription

// The libFuzzer target for TernCodec's decoder. A separate package so that the main build never
// links it; build it with
// `swift build -c release --sanitize=fuzzer --sanitize=address` (see the README, "Fuzzing").
let package = Package(
    name: "TernFuzz",
    dependencies: [
        .package(name: "Tern", path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "TernCodecFuzz",
            dependencies: [
                .product(name: "TernCodec", package: "Tern"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        )
    ],
    swiftLanguageModes: [.v6]
)
