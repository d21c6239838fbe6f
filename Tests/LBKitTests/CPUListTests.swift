import Testing

@testable import LBKit

#if canImport(Glibc)
import Glibc
#endif

/// `--relay-cpus`: the list parsed as the kernel writes `Cpus_allowed_list`, and which thread gets
/// which CPU.
@Suite("Relay CPU lists")
struct CPUListTests {
    @Test(
        "numbers and ranges parse in the order given",
        arguments: [
            ("0", [0]),
            ("0-3", [0, 1, 2, 3]),
            ("3,1", [3, 1]),
            ("0-1,4-5,8", [0, 1, 4, 5, 8]),
            ("1023", [1023]),
            ("7-7", [7]),
        ]
    )
    func parses(text: String, cpus: [Int]) throws {
        #expect(try CPUList(parsing: text).cpus == cpus)
    }

    @Test(
        "anything else is one line naming the flag and what is wrong, and no list",
        arguments: [
            ("", "has '', not a CPU number in 0-1023"),
            ("0-", "has '', not a CPU number"),
            ("-1", "has '', not a CPU number"),
            ("3-1", "has the range '3-1', which runs backwards"),
            ("a", "has 'a', not a CPU number"),
            ("1,,2", "has '', not a CPU number"),
            ("1,1", "names CPU 1 twice"),
            ("0-2,2", "names CPU 2 twice"),
            ("1024", "has '1024', not a CPU number in 0-1023"),
            ("00001", "has '00001', not a CPU number"),
            (" 1", "has ' 1', not a CPU number"),
            ("1-2-3", "has '2-3', not a CPU number"),
            ("+1", "has '+1', not a CPU number"),
            ("0-1023,0", "names CPU 0 twice"),
        ]
    )
    func refuses(text: String, expected: String) {
        #expect {
            _ = try CPUList(parsing: text)
        } throws: { error in
            guard let error = error as? L4LBError else { return false }
            return error.code == .invalidValue && error.message.hasPrefix("--relay-cpus: '\(text)' ")
                && error.message.contains(expected) && !error.message.contains("\n")
        }
    }

    @Test("thread N gets the Nth CPU, wrapping round when there are more threads than CPUs")
    func threadsWrapRound() throws {
        let list = try CPUList(parsing: "2,5,3")
        #expect((0..<7).map(list.cpu(forThread:)) == [2, 5, 3, 2, 5, 3, 2])
    }

    @Test("it prints as the kernel does, runs of CPUs as ranges, and says which CPUs are not allowed")
    func describesAndCompares() throws {
        #expect(try CPUList(parsing: "0,1,2,3,6,8-9").description == "0-3,6,8-9")
        #expect(CPUList(cpus: [3, 2, 1]).description == "3,2,1")
        let allowed = CPUList(cpus: [0, 1])
        #expect(try CPUList(parsing: "1,0").missing(from: allowed).isEmpty)
        #expect(try CPUList(parsing: "4,1,2").missing(from: allowed) == [4, 2])
    }

    @Test("the CPUs this process may use are read from the kernel, ascending, each once")
    func allowedFromTheKernel() throws {
        let allowed = try #require(ThreadScheduling.allowed())
        #expect(!allowed.cpus.isEmpty)
        #expect(allowed.cpus == allowed.cpus.sorted())
        #expect(Set(allowed.cpus).count == allowed.cpus.count)
        #expect(allowed.cpus.count <= sysconf(Int32(_SC_NPROCESSORS_CONF)))
    }
}
