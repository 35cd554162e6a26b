// goserver is the Go HTTP server clonebot's tests and benchmarks clone.
//
// It keeps state in memory (a request counter and an optional heap filled with
// a deterministic pattern) so a test can tell that a clone holds the state the
// original had at the clone, and it reports which PID namespace answered so a
// test can tell the copies apart.
//
//	GET /         "ok <pidns> <count>"          increments the counter
//	GET /count    the counter, without incrementing
//	GET /bump     increments and returns the counter
//	GET /whoami   "<pidns> <pid>"
//	GET /checksum FNV-1a of the heap (stable across clones)
//	GET /version  the -version flag
//
// Flags: -addr, -reuseport, -mptcp (Go's default; CRIU cannot dump it),
// -heap MiB, -graceful (http.Server.Shutdown on SIGTERM), -threads N (busy
// goroutines locked to OS threads), -version STRING, -activation (take the
// listener from systemd socket activation, LISTEN_FDS), -log-requests (one
// line per request on stderr: "request <path?query> <pidns> <pid>").
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

var (
	addr       = flag.String("addr", "127.0.0.1:0", "listen address")
	reuseport  = flag.Bool("reuseport", false, "set SO_REUSEPORT on the listener")
	mptcp      = flag.Bool("mptcp", false, "listen with MPTCP (Go >= 1.24 default; CRIU cannot dump it)")
	heapMiB    = flag.Int("heap", 0, "MiB of heap to allocate and fill")
	graceful   = flag.Bool("graceful", false, "on SIGTERM close the listener and finish requests")
	threads    = flag.Int("threads", 0, "extra OS threads to start")
	version    = flag.String("version", "v1", "version string served at /version")
	activation = flag.Bool("activation", false, "use the listener passed by socket activation (LISTEN_FDS)")
	portFile   = flag.String("port-file", "", "write the bound address here once listening")
	hold       = flag.String("hold", "", "keep an fd CRIU cannot dump open: perf or iouring")
	exitCloned = flag.Bool("exit-if-cloned", false, "exit(3) soon after finding itself in another PID namespace (a clone that crashes)")
	ignoreTerm = flag.Bool("ignore-term", false, "ignore SIGTERM (a server that does not drain)")
	logReqs    = flag.Bool("log-requests", false, "log each request's path and the answering PID namespace to stderr")
)

var (
	count atomic.Int64
	heap  [][]byte
)

func main() {
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)
	fillHeap(*heapMiB)
	if err := holdFD(*hold); err != nil {
		log.Fatal(err)
	}
	for i := 0; i < *threads; i++ {
		go func() {
			runtime.LockOSThread()
			for {
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	ln, err := listen()
	if err != nil {
		log.Fatal(err)
	}
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			log.Fatal(err)
		}
	}
	pidns, _ := os.Readlink("/proc/self/ns/pid")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok %s %d\n", pidns, count.Add(1))
	})
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", count.Load())
	})
	mux.HandleFunc("/bump", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d\n", count.Add(1))
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		ns, _ := os.Readlink("/proc/self/ns/pid")
		fmt.Fprintf(w, "%s %d\n", ns, os.Getpid())
	})
	mux.HandleFunc("/checksum", func(w http.ResponseWriter, r *http.Request) {
		h := fnv.New64a()
		for _, b := range heap {
			h.Write(b)
		}
		fmt.Fprintf(w, "%x\n", h.Sum64())
	})
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, *version)
	})
	var h http.Handler = mux
	if *logReqs {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ns, _ := os.Readlink("/proc/self/ns/pid")
			log.Printf("request %s %s %d", r.URL.RequestURI(), ns, os.Getpid())
			mux.ServeHTTP(w, r)
		})
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if *exitCloned {
		go func() {
			for {
				time.Sleep(10 * time.Millisecond)
				if ns, _ := os.Readlink("/proc/self/ns/pid"); ns != pidns {
					log.Printf("running in %s instead of %s: exiting", ns, pidns)
					os.Exit(3)
				}
			}
		}()
	}
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	}
	sigs := make(chan os.Signal, 1)
	if *ignoreTerm {
		signal.Notify(sigs, syscall.SIGINT)
	} else {
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	}
	done := make(chan struct{})
	go func() {
		<-sigs
		if *graceful {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		} else {
			os.Exit(0)
		}
		close(done)
	}()
	log.Printf("goserver %s pid %d listening on %s", *version, os.Getpid(), ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
	<-done
}

// fillHeap allocates mib MiB in 1 MiB chunks with a pattern derived from the
// chunk index, touching every page.
func fillHeap(mib int) {
	for i := 0; i < mib; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 64 {
			b[j] = byte(i*31 + j/64)
		}
		heap = append(heap, b)
	}
}

// held keeps the fd opened by holdFD referenced.
var held int

// holdFD opens an fd of a kind CRIU refuses, for preflight tests.
func holdFD(kind string) error {
	var err error
	switch kind {
	case "":
		return nil
	case "perf":
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_TASK_CLOCK,
			Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{})), Bits: unix.PerfBitDisabled}
		held, err = unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	case "iouring":
		params := make([]byte, 120) // struct io_uring_params
		fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0)
		if e != 0 {
			err = e
		}
		held = int(fd)
	default:
		return fmt.Errorf("-hold %q: want perf or iouring", kind)
	}
	if err != nil {
		return fmt.Errorf("-hold %s: %w", kind, err)
	}
	return nil
}

func listen() (net.Listener, error) {
	if *activation {
		if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
			return nil, fmt.Errorf("-activation: LISTEN_PID=%q is not this process (%d)", os.Getenv("LISTEN_PID"), os.Getpid())
		}
		n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-activation: LISTEN_FDS=%q", os.Getenv("LISTEN_FDS"))
		}
		f := os.NewFile(3, "listener")
		syscall.CloseOnExec(3)
		return net.FileListener(f)
	}
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(*mptcp)
	if *reuseport {
		lc.Control = func(network, address string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	return lc.Listen(context.Background(), "tcp", *addr)
}
