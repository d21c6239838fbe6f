/// Told of every closed client connection, on the relay thread that closed it.
///
/// This is how the access log and the metrics learn about connections without the data plane
/// knowing about either. An observer must not block: it runs between two connections' I/O.
public protocol ConnectionObserver: Sendable {
    func connectionClosed(_ record: ConnectionRecord)
}
