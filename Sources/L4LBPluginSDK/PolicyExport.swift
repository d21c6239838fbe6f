internal import CLBPolicy

#if canImport(Glibc)
import Glibc
#endif

/// Fills l4lb's descriptor (l4lb_policy.h) for `policy`: the body of a plugin's entry point,
///
/// ```swift
/// @_cdecl("l4lb_policy_entry")
/// public func entry(_ d: UnsafeMutableRawPointer?, _ size: Int) -> Int32 { exportPolicy(MyPolicy.self, d, size) }
/// ```
///
/// It fills only what the host's descriptor has room for, so the plugin loads into any l4lb of ABI
/// 1.x: without the host's log under 1.0 (stderr instead), without explanations under 1.0 and 1.1,
/// and with every pick handed a copy of the pool before 1.3.
public func exportPolicy<Policy: PolicyPlugin>(
    _ policy: Policy.Type,
    _ descriptor: UnsafeMutableRawPointer?,
    _ size: Int
) -> Int32 {
    guard let descriptor, size >= Int(L4LBDescriptorSizes.abi1_0) else { return 1 }
    let fields = descriptor.assumingMemoryBound(to: l4lb_policy_descriptor.self)
    if size >= L4LBDescriptorSizes.abi1_1 {
        PluginLog.host = fields.pointee.host
    }
    PluginLog.pluginName = Policy.name
    ExportedPolicy.type = policy
    // Static for the life of the process, as the ABI requires of the name.
    ExportedPolicy.name = UnsafePointer(strdup(Policy.name))
    fields.pointee.abi_major = UInt32(L4LB_POLICY_ABI_MAJOR)
    fields.pointee.abi_minor = UInt32(L4LB_POLICY_ABI_MINOR)
    fields.pointee.struct_size = UInt32(MemoryLayout<l4lb_policy_descriptor>.size)
    fields.pointee.name = ExportedPolicy.name
    fields.pointee.instance_new = sdkInstanceNew
    fields.pointee.instance_destroy = sdkInstanceDestroy
    fields.pointee.pick = sdkPick
    fields.pointee.pool_changed = sdkPoolChanged
    if Policy.wantsConnectionEvents {
        fields.pointee.connection_opened = sdkConnectionOpened
        fields.pointee.connection_closed = sdkConnectionClosed
    }
    if size >= L4LBDescriptorSizes.abi1_2 {
        fields.pointee.explain = sdkExplain
    }
    if size >= L4LBDescriptorSizes.abi1_3 {
        fields.pointee.pick_pool = sdkPickPool
    }
    return 0
}

/// The descriptor's size in each minor version: what the host passes tells which fields it has.
enum L4LBDescriptorSizes {
    static let abi1_0 = MemoryLayout<l4lb_policy_descriptor>.offset(of: \.host)!
    static let abi1_1 = abi1_0 + MemoryLayout<UnsafeRawPointer?>.size
    static let abi1_2 =
        MemoryLayout<l4lb_policy_descriptor>.offset(of: \.explain)! + MemoryLayout<UnsafeRawPointer?>.size
    static let abi1_3 =
        MemoryLayout<l4lb_policy_descriptor>.offset(of: \.pick_pool)! + MemoryLayout<UnsafeRawPointer?>.size
}

/// The one policy type this library exports. Set by the entry point on l4lb's control thread before
/// any instance exists, and never again: a plugin library exports one policy.
enum ExportedPolicy {
    nonisolated(unsafe) static var type: (any PolicyPlugin.Type)?
    nonisolated(unsafe) static var name: UnsafePointer<CChar>?
}

/// An instance behind the C ABI's `void *`.
final class PolicyBox {
    let policy: any PolicyPlugin

    init(_ policy: any PolicyPlugin) {
        self.policy = policy
    }

    static func from(_ pointer: UnsafeMutableRawPointer?) -> (any PolicyPlugin)? {
        pointer.map { Unmanaged<PolicyBox>.fromOpaque($0).takeUnretainedValue().policy }
    }
}

private func sdkInstanceNew(
    _ config: UnsafePointer<CChar>?,
    _ length: Int,
    _ error: UnsafeMutablePointer<CChar>?,
    _ capacity: Int
) -> UnsafeMutableRawPointer? {
    let text = config.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self) } ?? ""
    do throws(PluginError) {
        guard let type = ExportedPolicy.type else { throw PluginError("the plugin exported no policy") }
        return Unmanaged.passRetained(PolicyBox(try type.init(configuration: text))).toOpaque()
    } catch let failure {
        if let error, capacity > 0 {
            let bytes = Array(failure.message.utf8.prefix(capacity - 1))
            for (index, byte) in bytes.enumerated() { error[index] = CChar(bitPattern: byte) }
            error[bytes.count] = 0
        }
        return nil
    }
}

private func sdkInstanceDestroy(_ instance: UnsafeMutableRawPointer?) {
    guard let instance else { return }
    Unmanaged<PolicyBox>.fromOpaque(instance).release()
}

private func sdkPick(
    _ instance: UnsafeMutableRawPointer?,
    _ client: UnsafePointer<l4lb_address>?,
    _ backends: UnsafePointer<l4lb_backend>?,
    _ count: Int
) -> Int64 {
    guard let policy = PolicyBox.from(instance), let client else { return Int64(L4LB_PICK_NONE) }
    // A copy made for this call: no identity to match tables against.
    let view = PluginBackends(
        UnsafeBufferPointer(start: backends, count: backends == nil ? 0 : count),
        identified: false
    )
    return policy.pick(client: PluginAddress(client.pointee), backends: view).map(Int64.init) ?? Int64(L4LB_PICK_NONE)
}

private func sdkPickPool(
    _ instance: UnsafeMutableRawPointer?,
    _ client: UnsafePointer<l4lb_address>?,
    _ pool: UnsafePointer<l4lb_pool>?
) -> Int64 {
    guard let instance, let client, let pool else { return Int64(L4LB_PICK_NONE) }
    let view = PluginBackends(live: pool)
    // l4lb holds the instance for the whole call: no retain of it per pick.
    let picked = Unmanaged<PolicyBox>.fromOpaque(instance)._withUnsafeGuaranteedRef {
        $0.policy.pick(client: PluginAddress(client.pointee), backends: view)
    }
    return picked.map(Int64.init) ?? Int64(L4LB_PICK_NONE)
}

private func sdkExplain(
    _ instance: UnsafeMutableRawPointer?,
    _ client: UnsafePointer<l4lb_address>?,
    _ backends: UnsafePointer<l4lb_backend>?,
    _ count: Int,
    _ text: UnsafeMutablePointer<CChar>?,
    _ capacity: Int,
    _ length: UnsafeMutablePointer<Int>?
) -> Int64 {
    length?.pointee = 0
    guard let policy = PolicyBox.from(instance), let client else { return Int64(L4LB_PICK_NONE) }
    let view = PluginBackends(
        UnsafeBufferPointer(start: backends, count: backends == nil ? 0 : count),
        identified: false
    )
    let explanation = policy.explain(client: PluginAddress(client.pointee), backends: view)
    if let text, capacity > 0 {
        let bytes = Array(explanation.steps.joined(separator: "\n").utf8.prefix(capacity))
        for (index, byte) in bytes.enumerated() { text[index] = CChar(bitPattern: byte) }
        length?.pointee = bytes.count
    }
    return explanation.backend.map(Int64.init) ?? Int64(L4LB_PICK_NONE)
}

private func sdkPoolChanged(
    _ instance: UnsafeMutableRawPointer?,
    _ backends: UnsafePointer<l4lb_backend>?,
    _ count: Int
) {
    guard let policy = PolicyBox.from(instance) else { return }
    // The array l4lb keeps for this pool's picks (ABI 1.3): its address is the pool's identity.
    let view = PluginBackends(
        UnsafeBufferPointer(start: backends, count: backends == nil ? 0 : count),
        identified: true
    )
    policy.poolChanged(view)
}

private func sdkConnectionOpened(_ instance: UnsafeMutableRawPointer?, _ backend: UnsafePointer<l4lb_backend>?) {
    guard let policy = PolicyBox.from(instance), let backend else { return }
    policy.connectionOpened(PluginBackend(entry: backend.pointee))
}

private func sdkConnectionClosed(_ instance: UnsafeMutableRawPointer?, _ backend: UnsafePointer<l4lb_backend>?) {
    guard let policy = PolicyBox.from(instance), let backend else { return }
    policy.connectionClosed(PluginBackend(entry: backend.pointee))
}
