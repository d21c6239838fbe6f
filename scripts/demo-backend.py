#!/usr/bin/env python3
"""A tiny demo backend: greets each client with its name, then echoes what the client sends."""
import socket
import sys
import threading


def serve(client: socket.socket, name: str) -> None:
    with client:
        client.sendall(f"hello from {name}\n".encode())
        while data := client.recv(65536):
            client.sendall(data)


def main() -> None:
    port, name = int(sys.argv[1]), sys.argv[2]
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(128)
    while True:
        client, _ = server.accept()
        threading.Thread(target=serve, args=(client, name), daemon=True).start()


if __name__ == "__main__":
    main()
