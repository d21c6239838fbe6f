import LBKit
import Testing

@testable import LBControlPlane

@Suite("Pool editor")
struct PoolEditorTests {
    @Test("a burst of pool messages: order kept, the last word about an address wins, O(1) each")
    func poolEditor() {
        let a = BackendSpec(address: HostAndPort(host: "10.0.0.1", port: 80))
        let b = BackendSpec(address: HostAndPort(host: "10.0.0.2", port: 80))
        let c = BackendSpec(address: HostAndPort(host: "10.0.0.3", port: 80))
        var editor = PoolEditor([a, b])
        #expect(editor.apply(.addServer(a)) == nil)
        #expect(editor.apply(.addServer(c)) == .added(c))
        #expect(editor.apply(.removeServer(a.address)) == .removed(a.address))
        #expect(editor.apply(.removeServer(a.address)) == nil)
        let heavier = BackendSpec(address: b.address, weight: 4)
        #expect(editor.apply(.addServer(heavier)) == .updated(heavier))
        #expect(editor.apply(.addServer(a)) == .added(a))
        #expect(editor.specs == [heavier, c, a])
        #expect(editor.count == 3)
    }
}
