// swift-tools-version:6.1
// An outside package, as an embedder or an in-process Swift policy would write it: it depends on
// l4lb by path and uses LBKit alone. ExternalPackageTests builds it with hiredis's headers hidden.
// RedisUser uses LBControlPlane and must fail there: that proves the headers really were hidden.
import PackageDescription

let package = Package(
    name: "EmbedderPackage",
    dependencies: [.package(name: "l4lb", path: "../../..")],
    targets: [
        .executableTarget(name: "Embedder", dependencies: [.product(name: "LBKit", package: "l4lb")]),
        .executableTarget(name: "RedisUser", dependencies: [.product(name: "LBControlPlane", package: "l4lb")]),
    ],
    swiftLanguageModes: [.v6]
)
