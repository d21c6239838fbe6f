// swift-tools-version:6.1
// A policy plugin written outside l4lb, on the Swift plugin SDK alone (docs/plugins.md). The test
// suite builds this package and routes through its plugin. Point the dependency at l4lb's
// repository (a path or a git URL) and build with `swift build -c release`; the plugin is
// .build/release/libl4lb-policy-region-first.so.
import PackageDescription

let package = Package(
    name: "PluginPackage",
    products: [.library(name: "l4lb-policy-region-first", type: .dynamic, targets: ["RegionFirst"])],
    dependencies: [.package(name: "l4lb", path: "../..")],
    targets: [
        .target(name: "RegionFirst", dependencies: [.product(name: "L4LBPluginSDK", package: "l4lb")])
    ],
    swiftLanguageModes: [.v6]
)
