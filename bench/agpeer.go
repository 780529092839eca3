// agpeer: the Go side of bench/: peers and clients that bench_httpd runs
// beside httpd. Only Go's standard library (Debian's golang-go, offline).
// Every time it prints is CLOCK_MONOTONIC in microseconds, the clock
// bench_httpd and the httpd bench handler use, so times can be subtracted
// across processes.
//
//	agpeer detect  -addr A -log F      Go's net/http request context as a peer of
//	                                   the module's detection (the same URLs as the
//	                                   httpd bench handler: /bench?hold=MS[&wait=1]
//	                                   [&poll_us=US]); logs "START DETECTED NOTICED URL"
//	agpeer backend -addr A -workers N  the app server both proxies front: /work
//	                                   (N worker slots, MS of work that stops when
//	                                   the request's context is cancelled), /hold
//	                                   (holds until the proxy closes), /stats, /idle
//	agpeer storm   -url U -stats S     the refresh storm's users (one result line)
//	agpeer h2reset -url U -n N         HTTP/2 over TLS (ALPN): two streams on one
//	                                   connection, one is cancelled (RST_STREAM)
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// monoUS: clock_gettime(CLOCK_MONOTONIC) in microseconds.
func monoUS() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Sec*1000000 + ts.Nsec/1000
}

func dash(v int64) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatInt(v, 10)
}

func argInt(q url.Values, name string, dflt int64) int64 {
	if v := q.Get(name); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	}
	return dflt
}

// lineLog appends whole lines to a file, one write each (readers poll it).
type lineLog struct {
	mu sync.Mutex
	f  *os.File
}

func openLog(path string) *lineLog {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agpeer:", err)
		os.Exit(1)
	}
	return &lineLog{f: f}
}

func (l *lineLog) line(s string) {
	l.mu.Lock()
	l.f.WriteString(s + "\n")
	l.mu.Unlock()
}

func listen(addr string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agpeer:", err)
		os.Exit(1)
	}
	return ln
}

func serve(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Println("ready", ln.Addr().String())
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "agpeer:", err)
		os.Exit(1)
	}
}

// ------------------------------------------------------------------ detect

// The Go counterpart of mod_abortguard_bench's hold: "started\n" flushed,
// then until the client leaves (the request's context is cancelled) or MS
// pass, either waiting on ctx.Done() (wait=1) or polling ctx.Err() every
// poll_us. DETECTED: a goroutine waiting on ctx.Done() woke (Go exposes no
// cancel timestamp); NOTICED: the handler saw it.
func detect(args []string) {
	fs := flag.NewFlagSet("detect", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	logPath := fs.String("log", "detect.log", "log file")
	fs.Parse(args)
	lg := openLog(*logPath)
	mux := http.NewServeMux()
	mux.HandleFunc("/tiny", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/bench", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		start := monoUS()
		end := start + argInt(q, "hold", 0)*1000
		poll := time.Duration(argInt(q, "poll_us", 1000)) * time.Microsecond
		ctx := r.Context()
		var detected int64
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			select {
			case <-ctx.Done():
				atomic.StoreInt64(&detected, monoUS())
			case <-time.After(time.Duration(end-start)*time.Microsecond + 50*time.Millisecond):
			}
		}()
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "started\n")
		w.(http.Flusher).Flush()
		var noticed int64
		if q.Get("wait") == "1" {
			t := time.NewTimer(time.Duration(end-start) * time.Microsecond)
			select {
			case <-ctx.Done():
				noticed = monoUS()
			case <-t.C:
			}
			t.Stop()
		} else {
			for monoUS() < end {
				if ctx.Err() != nil {
					noticed = monoUS()
					break
				}
				time.Sleep(poll)
			}
		}
		if noticed != 0 {
			<-watched
		} else {
			io.WriteString(w, "done\n")
		}
		lg.line(fmt.Sprintf("%d %s %s %s", start, dash(atomic.LoadInt64(&detected)), dash(noticed),
			r.URL.RequestURI()))
	})
	serve(listen(*addr), mux)
}

// ----------------------------------------------------------------- backend

type workRecord struct {
	id      string
	state   string // done, cut (cancelled while working), queued (cancelled while waiting)
	workUS  int64  // time spent in a worker slot
	endUS   int64
	startUS int64
}

type backendState struct {
	slots  chan struct{}
	mu     sync.Mutex
	recs   []workRecord
	busy   int64 // requests in /work (queued or working)
	holds  int64 // requests in /hold
	holdLg *lineLog
}

func (b *backendState) record(r workRecord) {
	b.mu.Lock()
	b.recs = append(b.recs, r)
	b.mu.Unlock()
}

// /work?ms=MS&id=ID: a slot of the worker pool (queued until one is free),
// then MS of work; work stops when the request's context is cancelled (the
// proxy closed the connection), as a Go app's work does.
func (b *backendState) work(w http.ResponseWriter, r *http.Request) {
	atomic.AddInt64(&b.busy, 1)
	defer atomic.AddInt64(&b.busy, -1)
	q := r.URL.Query()
	id := q.Get("id")
	ms := argInt(q, "ms", 200)
	ctx := r.Context()
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		now := monoUS()
		b.record(workRecord{id: id, state: "queued", endUS: now, startUS: now})
		return
	}
	start := monoUS()
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	select {
	case <-t.C:
		<-b.slots
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "done "+id+"\n")
		end := monoUS()
		b.record(workRecord{id: id, state: "done", workUS: end - start, endUS: end, startUS: start})
	case <-ctx.Done():
		t.Stop()
		<-b.slots
		end := monoUS()
		b.record(workRecord{id: id, state: "cut", workUS: end - start, endUS: end, startUS: start})
	}
}

// /hold?ms=MAX&t=TAG[&pre=1]: "started\n" flushed (unless pre=1: nothing is
// sent, the proxy waits for the status line), then holds until the proxy
// closes the connection or MAX ms. Logs "TAG START CLOSED" (CLOSED: when the
// request's context was cancelled, i.e. the backend saw the proxy's FIN; "-"
// if it never was).
func (b *backendState) hold(w http.ResponseWriter, r *http.Request) {
	atomic.AddInt64(&b.holds, 1)
	q := r.URL.Query()
	start := monoUS()
	ctx := r.Context()
	if q.Get("pre") != "1" {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "started\n")
		w.(http.Flusher).Flush()
	}
	t := time.NewTimer(time.Duration(argInt(q, "ms", 5000)) * time.Millisecond)
	var closed int64
	select {
	case <-ctx.Done():
		closed = monoUS()
	case <-t.C:
	}
	t.Stop()
	atomic.AddInt64(&b.holds, -1)
	b.holdLg.line(fmt.Sprintf("%s %d %s", q.Get("t"), start, dash(closed)))
	if closed == 0 {
		io.WriteString(w, "done\n")
	}
}

func backend(args []string) {
	fs := flag.NewFlagSet("backend", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	workers := fs.Int("workers", 4, "worker slots")
	logPath := fs.String("log", "hold.log", "the /hold log")
	fs.Parse(args)
	b := &backendState{slots: make(chan struct{}, *workers), holdLg: openLog(*logPath)}
	mux := http.NewServeMux()
	mux.HandleFunc("/work", b.work)
	mux.HandleFunc("/hold", b.hold)
	// /idle: "BUSY HOLDS" (requests in /work, in /hold).
	mux.HandleFunc("/idle", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d %d\n", atomic.LoadInt64(&b.busy), atomic.LoadInt64(&b.holds))
	})
	// /stats: the /work records since the last call, one per line:
	// "ID STATE WORK_US START_US END_US".
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		recs := b.recs
		b.recs = nil
		b.mu.Unlock()
		bw := bufio.NewWriter(w)
		for _, rec := range recs {
			fmt.Fprintf(bw, "%s %s %d %d %d\n", rec.id, rec.state, rec.workUS, rec.startUS, rec.endUS)
		}
		bw.Flush()
	})
	serve(listen(*addr), mux)
}

// ------------------------------------------------------------------- storm

// Users in front of the app: each sends a request, and either abandons it
// after a random 50-300 ms (a fraction of them) or waits up to the give-up
// time; then sends the next at once (refresh). Goodput: complete responses
// per second. Afterwards the backend's records are joined with the
// abandoned request ids: work "computed for nobody" finished after its
// client had left.
func storm(args []string) {
	fs := flag.NewFlagSet("storm", flag.ExitOnError)
	target := fs.String("url", "", "the proxy's /work URL")
	statsURL := fs.String("stats", "", "the backend's /stats URL")
	idleURL := fs.String("idle", "", "the backend's /idle URL")
	users := fs.Int("users", 12, "users")
	seconds := fs.Float64("seconds", 10, "duration")
	abandonFrac := fs.Float64("abandon", 0.3, "fraction of requests abandoned early")
	abandonMin := fs.Int("abandon-min", 50, "earliest abandon, ms")
	abandonMax := fs.Int("abandon-max", 300, "latest abandon, ms")
	giveUp := fs.Int("giveup", 1000, "the others give up after, ms")
	workMS := fs.Int("work-ms", 200, "backend work per request, ms")
	tag := fs.String("tag", "s", "request id prefix")
	seed := fs.Int64("seed", 1, "random seed")
	fs.Parse(args)

	tr := &http.Transport{MaxIdleConnsPerHost: 4 * *users, DisableCompression: true}
	client := &http.Client{Transport: tr}
	// Drain the backend's records from earlier runs.
	fetchStats(*statsURL)

	startUS := monoUS()
	endUS := startUS + int64(*seconds*1e6)
	var mu sync.Mutex
	abandoned := map[string]int64{} // id -> when its client left
	inFlightAtEnd := map[string]bool{}
	var ok, early, gaveUp, errs int64
	var wg sync.WaitGroup
	for u := 0; u < *users; u++ {
		wg.Add(1)
		go func(u int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(*seed*1000 + int64(u)))
			for n := 0; ; n++ {
				now := monoUS()
				if now >= endUS {
					return
				}
				id := fmt.Sprintf("%s-%d-%d", *tag, u, n)
				limit := time.Duration(*giveUp) * time.Millisecond
				isEarly := rng.Float64() < *abandonFrac
				if isEarly {
					limit = time.Duration(*abandonMin+rng.Intn(*abandonMax-*abandonMin+1)) * time.Millisecond
				}
				// The run's end cuts a request short: not an abandon.
				cutByEnd := false
				if left := time.Duration(endUS-now) * time.Microsecond; left < limit {
					limit, cutByEnd = left, true
				}
				ctx, cancel := context.WithTimeout(context.Background(), limit)
				req, _ := http.NewRequestWithContext(ctx, "GET",
					fmt.Sprintf("%s?ms=%d&id=%s", *target, *workMS, id), nil)
				resp, err := client.Do(req)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != 200 || !strings.HasPrefix(string(body), "done")) {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				left := monoUS()
				cancel()
				switch {
				case err == nil:
					atomic.AddInt64(&ok, 1)
				case ctx.Err() != nil && cutByEnd:
					mu.Lock()
					inFlightAtEnd[id] = true
					mu.Unlock()
				case ctx.Err() != nil:
					if isEarly {
						atomic.AddInt64(&early, 1)
					} else {
						atomic.AddInt64(&gaveUp, 1)
					}
					mu.Lock()
					abandoned[id] = left
					mu.Unlock()
				default:
					atomic.AddInt64(&errs, 1)
					time.Sleep(10 * time.Millisecond)
				}
			}
		}(u)
	}
	wg.Wait()
	tr.CloseIdleConnections()
	// Let the backend finish what it still has (bounded), so that the next
	// contender starts on an idle backend; only work that ended within the
	// run counts below.
	waitIdle(*idleURL, 15*time.Second)
	var nobody, nobodyUS, abandonedUS, doneN, cutN, queuedN, workUS int64
	for _, rec := range fetchStats(*statsURL) {
		if !strings.HasPrefix(rec.id, *tag+"-") || rec.endUS > endUS || inFlightAtEnd[rec.id] {
			continue
		}
		workUS += rec.workUS
		switch rec.state {
		case "done":
			doneN++
		case "cut":
			cutN++
		case "queued":
			queuedN++
		}
		left, was := abandoned[rec.id]
		if !was {
			continue
		}
		abandonedUS += rec.workUS
		if rec.state == "done" && left <= rec.endUS {
			nobody++
			nobodyUS += rec.workUS
		}
	}
	secs := float64(endUS-startUS) / 1e6
	fmt.Printf("storm goodput_rps=%.2f ok=%d abandoned=%d gave_up=%d errors=%d "+
		"backend_done=%d backend_cut=%d backend_dropped_queued=%d backend_busy_s=%.2f "+
		"nobody=%d nobody_s=%.2f abandoned_work_s=%.2f seconds=%.2f\n",
		float64(ok)/secs, ok, early, gaveUp, errs, doneN, cutN, queuedN, float64(workUS)/1e6,
		nobody, float64(nobodyUS)/1e6, float64(abandonedUS)/1e6, secs)
}

func fetchStats(u string) []workRecord {
	resp, err := http.Get(u)
	if err != nil {
		fmt.Fprintln(os.Stderr, "agpeer: stats:", err)
		return nil
	}
	defer resp.Body.Close()
	var out []workRecord
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var r workRecord
		if n, _ := fmt.Sscanf(sc.Text(), "%s %s %d %d %d", &r.id, &r.state, &r.workUS, &r.startUS,
			&r.endUS); n == 5 {
			out = append(out, r)
		}
	}
	return out
}

func waitIdle(u string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		resp, err := http.Get(u)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.HasPrefix(string(b), "0 ") {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ----------------------------------------------------------------- h2reset

// HTTP/2 over TLS with ALPN, as a browser: per trial, one new connection,
// two requests on it (two streams of URL, each given &t=TAGa / &t=TAGb);
// once both have sent "started\n", the first's context is cancelled (Go's
// transport resets its stream: RST_STREAM CANCEL) and the second is read
// to its end. Prints "reset TAGa CANCEL_US OTHER_OK" per trial.
func h2reset(args []string) {
	fs := flag.NewFlagSet("h2reset", flag.ExitOnError)
	target := fs.String("url", "", "https URL of the held request that is reset (hold=... in the query)")
	other := fs.String("other", "", "https URL of the other stream's request (default: -url)")
	n := fs.Int("n", 20, "trials")
	tag := fs.String("tag", "h", "tag prefix")
	fs.Parse(args)
	for i := 0; i < *n; i++ {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			ForceAttemptHTTP2: true, MaxConnsPerHost: 1}
		client := &http.Client{Transport: tr}
		type stream struct {
			resp   *http.Response
			cancel context.CancelFunc
			err    error
		}
		open := func(u, t string) stream {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", u+"&t="+t, nil)
			resp, err := client.Do(req)
			if err == nil && resp.ProtoMajor != 2 {
				err = fmt.Errorf("not HTTP/2: %s", resp.Proto)
			}
			if err == nil {
				buf := make([]byte, 8)
				_, err = io.ReadFull(resp.Body, buf)
				if err == nil && string(buf) != "started\n" {
					err = fmt.Errorf("unexpected body %q", buf)
				}
			}
			return stream{resp, cancel, err}
		}
		ta := fmt.Sprintf("%s%da", *tag, i)
		tb := fmt.Sprintf("%s%db", *tag, i)
		// The first request opens the connection; the second joins it.
		a := open(*target, ta)
		otherURL := *other
		if otherURL == "" {
			otherURL = *target
		}
		b := open(otherURL, tb)
		if a.err != nil || b.err != nil {
			fmt.Printf("error %v %v\n", a.err, b.err)
			if a.cancel != nil {
				a.cancel()
			}
			if b.cancel != nil {
				b.cancel()
			}
			tr.CloseIdleConnections()
			continue
		}
		time.Sleep(20 * time.Millisecond)
		cancelUS := monoUS()
		a.cancel()
		rest, err := io.ReadAll(b.resp.Body)
		b.resp.Body.Close()
		a.resp.Body.Close()
		otherOK := err == nil && string(rest) == "done\n"
		fmt.Printf("reset %s %d %v\n", ta, cancelUS, otherOK)
		b.cancel()
		tr.CloseIdleConnections()
	}
}

// -------------------------------------------------------------------- main

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agpeer detect|backend|storm|h2reset [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "detect":
		detect(os.Args[2:])
	case "backend":
		backend(os.Args[2:])
	case "storm":
		storm(os.Args[2:])
	case "h2reset":
		h2reset(os.Args[2:])
	default:
		fmt.Fprintln(os.Stderr, "agpeer: unknown command", os.Args[1])
		os.Exit(2)
	}
}
