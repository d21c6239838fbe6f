import LBKit
import ServiceLifecycle

/// Runs a started `ControlPlane` as a swift-service-lifecycle service. Placed before the proxy in
/// the service group, so that on shutdown the proxy drains first and the control plane stops last.
public struct ControlPlaneService: Service {
    private let controlPlane: ControlPlane

    public init(controlPlane: ControlPlane) {
        self.controlPlane = controlPlane
    }

    public func run() async throws {
        _ = try? await gracefulShutdown()
        await self.controlPlane.stop()
    }
}
