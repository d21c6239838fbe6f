import L4LBPluginSDK

/// The geo-routing plugin's entry point: `GeoRouter`, exported through the SDK.
@_cdecl("l4lb_policy_entry")
public func l4lbPolicyEntry(_ descriptor: UnsafeMutableRawPointer?, _ size: Int) -> Int32 {
    exportPolicy(GeoRouter.self, descriptor, size)
}
