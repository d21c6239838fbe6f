import LBKit
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A GET to a running l4lb's admin endpoint, for commands that show what it has loaded. Blocking,
/// HTTP/1.0 (the server closes after the answer), bounded by a timeout on every read and write.
enum AdminClient {
    static func get(_ address: HostAndPort, path: String, timeoutSeconds: Int = 5) throws(L4LBError) -> String {
        let socketAddress = try BackendResolver.resolve(address)
        let fd = socket(socketAddress.protocol.rawValue, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Self.failure(address, "socket") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = socketAddress.withSockAddr { connect(fd, $0, socklen_t($1)) }
        guard connected == 0 else { throw Self.failure(address, "connect") }
        let request = Array("GET \(path) HTTP/1.0\r\nHost: \(address)\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count
        else {
            throw Self.failure(address, "send")
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        // Bounded: the admin endpoint's answers are far below 64 MiB.
        while response.count < 64 << 20 {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { break }
            guard count > 0 else { throw Self.failure(address, "read") }
            response += chunk[0..<count]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.") else {
            throw L4LBError(.invalidValue, "--admin \(address): not an HTTP answer")
        }
        guard text.split(separator: " ", maxSplits: 2).dropFirst().first == "200" else {
            throw L4LBError(.invalidValue, "--admin \(address): \(text.prefix { $0 != "\r" })")
        }
        guard let split = text.range(of: "\r\n\r\n") else { return "" }
        return String(text[split.upperBound...])
    }

    private static func failure(_ address: HostAndPort, _ call: String) -> L4LBError {
        L4LBError(.invalidValue, "--admin \(address): \(call): \(String(cString: strerror(errno)))")
    }
}
