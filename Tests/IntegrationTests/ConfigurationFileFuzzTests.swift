import Foundation
import FuzzSupport
import LBKit
import Testing

@testable import l4lb

/// Config-file text under fuzzing, through the whole path a file takes: its lines, merged with a
/// command line, parsed as flags and checked into settings. Every input gets settings or one line of
/// error; nothing crashes or hangs.
@Suite("Config files under fuzzing")
struct ConfigurationFileFuzzTests {
    @Test("mutated config files: lines, flags and settings, or one line of error")
    func configFiles() {
        let corpus = [
            "listen 127.0.0.1:0\nbackend 10.0.0.1:80,weight=2\npolicy least-connections\n",
            "# comment\n\nlisten=[::1]:0\nbackend = 10.0.0.2:80,region=eu\nidle-timeout 30s\naccept-proxy-protocol\n",
            "--threads 2\nmax-connections 100\nshadow-policy maglev\nshadow-sample 10%\nconnect-timeout 1500ms\n",
            "policy geo {\"database\": \"/x.mmdb\", \"fallback\": [\"a\"]}\nlog-level debug\ninstance-id lb-1\n",
        ]
        var settled = 0
        Mutator.fuzz(corpus, seed: 11, iterations: 1_000) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            let lines: [ConfigurationFile.Line]
            do throws(L4LBError) {
                lines = try ConfigurationFile.parse(text, path: "fuzz.conf")
            } catch {
                #expect(!error.message.contains("\n"), "a multi-line error: \(error.message)")
                return
            }
            for line in lines {
                #expect(!line.name.isEmpty && line.name != "config")
            }
            let arguments = ConfigurationFile.merge(lines, commandLine: ["--listen", "127.0.0.1:0"])
            guard let command = try? RunCommand.parse(arguments) else { return }
            do throws(L4LBError) {
                _ = try command.makeAllSettings()
                settled += 1
            } catch {
                #expect(!error.message.contains("\n"), "a multi-line error: \(error.message)")
            }
        }
        // The corpus itself is valid: the fuzzer reached the settings, not only the line parser.
        #expect(settled >= 4)
    }

    @Test("found by the fuzzer: CRLF line endings read as lines, and errors quoting control characters stay one line")
    func crlfAndControlCharacters() throws {
        let lines = try ConfigurationFile.parse("listen 127.0.0.1:0\r\nbackend 10.0.0.1:80\r\n", path: "crlf.conf")
        #expect(lines == [.init(name: "listen", value: "127.0.0.1:0"), .init(name: "backend", value: "10.0.0.1:80")])
        #expect(throws: L4LBError.self) { try ConfigurationFile.parse("lis\u{1}ten x\n", path: "bad.conf") }
        do {
            _ = try ConfigurationFile.parse("policy\u{2028}x!\n", path: "bad.conf")
        } catch {
            #expect(
                !error.message.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x2028 },
                "\(error.message)"
            )
            #expect(error.message.contains("\\u{2028}"))
        }
    }
}
