import ArgumentParser
import LBKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Prints an operator-facing error as one line on stderr and ends the command with status 2, without
/// a usage dump or a stack trace.
func exitWithOperatorError(_ message: String) -> ExitCode {
    let line = "l4lb: error: \(message)\n"
    var bytes = Array(line.utf8)
    _ = bytes.withUnsafeMutableBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    return ExitCode(2)
}
