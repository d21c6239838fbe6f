import CLBPolicy

#if canImport(Glibc)
import Glibc
#endif

/// The geo-routing plugin's entry point and its function table (see l4lb_policy.h).
@_cdecl("l4lb_policy_entry")
public func l4lbPolicyEntry(_ descriptor: UnsafeMutablePointer<l4lb_policy_descriptor>?, _ size: Int) -> Int32 {
    // The ABI 1.0 part is all this plugin needs; the host's log (1.1) is used when it is there.
    let hostOffset = MemoryLayout<l4lb_policy_descriptor>.offset(of: \.host)!
    guard let descriptor, size >= hostOffset else { return 1 }
    if size >= hostOffset + MemoryLayout<UnsafePointer<l4lb_host>?>.size {
        GeoLog.host = descriptor.pointee.host
    }
    descriptor.pointee.abi_major = UInt32(L4LB_POLICY_ABI_MAJOR)
    descriptor.pointee.abi_minor = UInt32(L4LB_POLICY_ABI_MINOR)
    descriptor.pointee.struct_size = UInt32(MemoryLayout<l4lb_policy_descriptor>.size)
    descriptor.pointee.name = GeoNames.policyName
    descriptor.pointee.instance_new = geoInstanceNew
    descriptor.pointee.instance_destroy = geoInstanceDestroy
    descriptor.pointee.pick = geoPick
    return 0
}

enum GeoNames {
    /// Static for the life of the process, as the ABI requires.
    nonisolated(unsafe) static let policyName = UnsafePointer(strdup("geo")!)
}

private func geoInstanceNew(
    _ config: UnsafePointer<CChar>?,
    _ length: Int,
    _ error: UnsafeMutablePointer<CChar>?,
    _ capacity: Int
) -> UnsafeMutableRawPointer? {
    let text = config.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: length), as: UTF8.self) } ?? ""
    do throws(GeoDatabase.Failure) {
        let configuration: GeoConfiguration
        do {
            configuration = try GeoConfiguration(json: text)
        } catch {
            throw GeoDatabase.Failure(message: error.message)
        }
        let router = try GeoRouter(configuration: configuration)
        router.startWatching()
        return Unmanaged.passRetained(router).toOpaque()
    } catch let failure {
        if let error, capacity > 0 {
            let bytes = Array(failure.message.utf8.prefix(capacity - 1))
            for (index, byte) in bytes.enumerated() { error[index] = CChar(bitPattern: byte) }
            error[bytes.count] = 0
        }
        return nil
    }
}

private func geoInstanceDestroy(_ instance: UnsafeMutableRawPointer?) {
    guard let instance else { return }
    let router = Unmanaged<GeoRouter>.fromOpaque(instance)
    router.takeUnretainedValue().stop()
    router.release()
}

private func geoPick(
    _ instance: UnsafeMutableRawPointer?,
    _ client: UnsafePointer<l4lb_address>?,
    _ backends: UnsafePointer<l4lb_backend>?,
    _ count: Int
) -> Int64 {
    guard let instance, let client, let backends, count > 0 else { return Int64(L4LB_PICK_NONE) }
    let router = Unmanaged<GeoRouter>.fromOpaque(instance).takeUnretainedValue()
    return router.pick(client: client, backends: UnsafeBufferPointer(start: backends, count: count))
}
