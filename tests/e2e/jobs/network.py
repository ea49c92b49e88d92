"""A job that tries to reach a TCP listener on 127.0.0.1:port (the test's, on the host)."""
import errno
import socket


def reach(state):
    connection = socket.socket()
    connection.settimeout(5)
    try:
        connection.connect(("127.0.0.1", state["port"]))
        connection.sendall(state["token"].encode())
        outcome = "connected"
    except OSError as e:
        outcome = errno.errorcode.get(e.errno, str(e))
    finally:
        connection.close()
    return {"outcome": outcome, "interfaces": sorted(name for _, name in socket.if_nameindex())}
