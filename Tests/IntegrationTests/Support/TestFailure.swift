/// The error of the tests' own helpers (a client that cannot connect, a port that cannot be
/// reserved, a metrics text that does not parse): what went wrong, in one line.
struct TestFailure: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}
