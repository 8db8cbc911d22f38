#!/usr/bin/env python3
"""What php-fpm does with connections beyond its free workers, observed over loopback.

Starts php-fpm (a static pool of 2, then ondemand pools of 3; each in its own temp dir on a free
port), talks raw FastCGI to it and
prints what it sees. docs/reference/backends.md quotes its output.

    python3 docs/reference/php-fpm-probe.py [/usr/sbin/php-fpm8.2]
"""
import os, shutil, socket, struct, subprocess, sys, tempfile, time

FPM = sys.argv[1] if len(sys.argv) > 1 else '/usr/sbin/php-fpm8.2'


def rec(t, rid, content):
    pad = (-len(content)) % 8
    return struct.pack('>BBHHBB', 1, t, rid, len(content), pad, 0) + content + b'\0' * pad


def nv(n, v):
    def ln(x):
        return bytes([len(x)]) if len(x) < 128 else struct.pack('>I', len(x) | 0x80000000)
    return ln(n) + ln(v) + n + v


GET_VALUES = rec(9, 0, b''.join(nv(k, b'') for k in (b'FCGI_MAX_CONNS', b'FCGI_MAX_REQS', b'FCGI_MPXS_CONNS')))


def request(script, keep, query=b'', name=None):
    params = [(b'SCRIPT_FILENAME', script), (b'SCRIPT_NAME', name or b'/' + os.path.basename(script)),
              (b'REQUEST_METHOD', b'GET'), (b'QUERY_STRING', query)]
    return (rec(1, 1, struct.pack('>HB5x', 1, 1 if keep else 0)) + rec(4, 1, b''.join(nv(k, v) for k, v in params))
            + rec(4, 1, b'') + rec(5, 1, b''))


def read_until(s, last_type, timeout):
    """Records up to one of type last_type; ends with 'TIMEOUT' or 'EOF' if it does not come."""
    s.settimeout(timeout)
    buf, out, t0 = b'', [], time.time()
    try:
        while True:
            while len(buf) >= 8:
                _, t, _, clen, pad, _ = struct.unpack('>BBHHBB', buf[:8])
                if len(buf) < 8 + clen + pad:
                    break
                out.append((t, buf[8:8 + clen]))
                buf = buf[8 + clen + pad:]
                if t == last_type:
                    return out, time.time() - t0
            d = s.recv(65536)
            if not d:
                return out + [('EOF', b'')], time.time() - t0
            buf += d
    except socket.timeout:
        return out + [('TIMEOUT', b'')], time.time() - t0


def kinds(recs):
    names = {3: 'END_REQUEST', 6: 'STDOUT', 10: 'GET_VALUES_RESULT'}
    return [names.get(t, t) if t != 10 else 'GET_VALUES_RESULT ' + repr(c) for t, c in recs]


def backlog(port):
    out = subprocess.run(['ss', '-Hltn', f'sport = :{port}'], capture_output=True, text=True).stdout.split()
    return out[1] if len(out) > 1 else '?'


def start_fpm(pm_lines):
    """php-fpm with one pool on a free port in a new temp dir: (process, port, dir, conn())."""
    d = tempfile.mkdtemp(prefix='php-fpm-probe-')
    os.chmod(d, 0o755)
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with open(f'{d}/php-fpm.conf', 'w') as f:
        f.write(f'[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ndaemonize = no\n'
                f'[p]\nlisten = 127.0.0.1:{port}\n{pm_lines}pm.status_path = /fpm-status\n')
    with open(f'{d}/sleep.php', 'w') as f:
        f.write('<?php file_put_contents(__DIR__."/ran.log", ($_GET["tag"] ?? "")."\\n", FILE_APPEND); '
                'usleep(200000); echo "ok\\n";')
    args = [FPM, '-n', '-F', '-y', f'{d}/php-fpm.conf'] + (['-R'] if os.geteuid() == 0 else [])
    fpm = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Wait for the pid file rather than connecting: a test connection would start an ondemand
    # worker.
    for _ in range(100):
        if os.path.exists(f'{d}/fpm.pid'):
            break
        time.sleep(0.05)
    time.sleep(0.2)
    return fpm, port, d, lambda: socket.create_connection(('127.0.0.1', port), timeout=2)


def children(fpm):
    return len(subprocess.run(['pgrep', '-P', str(fpm.pid)], capture_output=True, text=True).stdout.split())


def static_pool():
    fpm, port, d, conn = start_fpm('pm = static\npm.max_children = 2\n')
    sleep = f'{d}/sleep.php'.encode()
    try:
        print(subprocess.run([FPM, '-v'], capture_output=True, text=True).stdout.splitlines()[0])
        print(f'static pool of 2 on 127.0.0.1:{port}')

        print('1. GET_VALUES on a fresh connection, both workers free')
        a = conn()
        a.sendall(GET_VALUES)
        r, dt = read_until(a, 10, 2)
        print(f'   A: {kinds(r)} in {dt:.3f}s')

        print('2. a request with FCGI_KEEP_CONN on A, then one on a second connection B; both stay open')
        for name, s in (('A', a), ('B', b := conn())):
            s.sendall(request(sleep, True, b'tag=' + name.encode()))
            r, dt = read_until(s, 3, 3)
            print(f'   {name}: {kinds(r)} in {dt:.3f}s')

        print('3. a third connection C while A and B are open and idle')
        t0 = time.time()
        c = conn()
        print(f'   connect() returned in {time.time() - t0:.3f}s; listen backlog (ss Recv-Q): {backlog(port)}')
        c.sendall(GET_VALUES)
        r, dt = read_until(c, 10, 2)
        print(f'   C GET_VALUES: {kinds(r)} after {dt:.3f}s')
        c.sendall(request(sleep, False, b'tag=C'))
        r, dt = read_until(c, 3, 1)
        print(f'   C request: {kinds(r)} after {dt:.3f}s')

        print('4. A is still served meanwhile: its worker stays with it')
        a.sendall(request(sleep, True, b'tag=A2'))
        r, dt = read_until(a, 3, 3)
        print(f'   A: {kinds(r)} in {dt:.3f}s')

        print('5. close A: C is accepted and answered, GET_VALUES first')
        t0 = time.time()
        a.close()
        r, _ = read_until(c, 3, 3)
        print(f'   C: {kinds(r)} {time.time() - t0:.3f}s after A closed')
        c.close()

        print('6. php-fpm status on B: "accepted conn" after 3 more requests on B')
        def status(s):
            s.sendall(request(b'/fpm-status', True, name=b'/fpm-status'))
            r, _ = read_until(s, 3, 3)
            text = b''.join(x[1] for x in r if x[0] == 6).decode()
            return {k.strip(): v.strip() for k, v in (l.split(':', 1) for l in text.splitlines() if ':' in l)}
        before = status(b)['accepted conn']
        for i in range(3):
            b.sendall(request(sleep, True, b'tag=B%d' % i))
            read_until(b, 3, 3)
        print(f'   accepted conn {before} -> {status(b)["accepted conn"]} (status requests count too)')

        print('7. a request written on D, D closed by the client while still in the backlog')
        e = conn()  # holds the second worker with B
        e.sendall(request(sleep, True, b'tag=E'))
        read_until(e, 3, 3)
        dd = conn()
        dd.sendall(request(sleep, False, b'tag=D'))
        time.sleep(0.2)
        dd.close()
        time.sleep(0.2)
        st = status(b)
        print(f'   listen queue {st["listen queue"]}, max listen queue {st["max listen queue"]}; ss Recv-Q {backlog(port)}')
        b.close()
        time.sleep(0.6)
        ran = open(f'{d}/ran.log').read().split()
        print(f'   B closed; scripts run, in order: {ran}; D ran: {"D" in ran}')
        e.close()
    finally:
        fpm.terminate()
        fpm.wait(5)
        shutil.rmtree(d, ignore_errors=True)


def ondemand_pool(runs=6):
    print('8. ondemand pool of at most 3 (fresh php-fpm each run, no worker yet): connections A and B')
    print('   opened together, a request with FCGI_KEEP_CONN on each, both kept open')
    stuck = 0
    for run in range(runs):
        fpm, port, d, conn = start_fpm('pm = ondemand\npm.max_children = 3\npm.process_idle_timeout = 10s\n')
        sleep = f'{d}/sleep.php'.encode()
        try:
            a, b = conn(), conn()
            a.sendall(request(sleep, True, b'tag=A'))
            b.sendall(request(sleep, True, b'tag=B'))
            ra, _ = read_until(a, 3, 3)
            rb, db = read_until(b, 3, 3)
            line = f'   run {run}: A {kinds(ra)[-1]}, B {kinds(rb)[-1]}, workers {children(fpm)}, ss Recv-Q {backlog(port)}'
            if rb[-1][0] != 3:
                stuck += 1
                c = conn()
                c.sendall(request(sleep, True, b'tag=C'))
                rb, _ = read_until(b, 3, 2)
                rc, _ = read_until(c, 3, 2)
                line += f'; then C connects: B {kinds(rb)[-1]}, C {kinds(rc)[-1]}, workers {children(fpm)}'
            print(line)
        finally:
            fpm.terminate()
            fpm.wait(5)
            shutil.rmtree(d, ignore_errors=True)
    print(f'   B left in the backlog below pm.max_children in {stuck} of {runs} runs')


static_pool()
ondemand_pool()
