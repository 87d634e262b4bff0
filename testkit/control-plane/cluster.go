package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The controllers a test cluster runs: the ones whose effects the operator's
// users see without a kubelet (service accounts and their tokens, namespace
// deletion, garbage collection by ownerReferences, aggregated roles, the
// kube-root-ca.crt ConfigMap).
const controllers = "serviceaccount-controller,serviceaccount-token-controller,garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller,root-ca-certificate-publisher-controller"

// state is what a running cluster publishes beside its kubeconfig, for the
// test harness: where each part listens and where to ask for faults.
type state struct {
	PID          int     `json:"pid"`
	Kubeconfig   string  `json:"kubeconfig"`
	Server       string  `json:"server"`
	Etcd         string  `json:"etcd"`
	Control      string  `json:"control"`
	DataDir      string  `json:"dataDir"`
	StartSeconds float64 `json:"startSeconds"`
	Kubernetes   string  `json:"kubernetes"`
	EtcdVersion  string  `json:"etcdVersion"`
}

type options struct {
	kubeconfig     string
	dataDir        string
	keepData       bool
	exitWithParent bool
	idleExit       time.Duration
	verbose        bool
	pidfile        string
	logFile        string
}

func clusterMain(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: control-plane cluster run|start|stop [flags]")
		return 2
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("cluster "+sub, flag.ContinueOnError)
	def := os.Getenv("CLUSTER_KUBECONFIG")
	if def == "" {
		def = "kubeconfig"
	}
	var o options
	fs.StringVar(&o.kubeconfig, "kubeconfig", def, "where to write the admin kubeconfig (default $CLUSTER_KUBECONFIG); the state file is <kubeconfig>.state.json")
	fs.StringVar(&o.dataDir, "data-dir", "", "data and certificates (default: a new temporary folder, removed at stop)")
	fs.BoolVar(&o.keepData, "keep-data", false, "keep the data folder at stop")
	fs.BoolVar(&o.exitWithParent, "exit-with-parent", false, "stop when the process that started this one exits")
	fs.DurationVar(&o.idleExit, "idle-exit", 0, "stop after this long without a POST /touch on the control address (0: never)")
	fs.BoolVar(&o.verbose, "verbose", false, "copy every component's log to stderr")
	fs.StringVar(&o.pidfile, "pidfile", "", "start/stop: the pid file (default <kubeconfig>.pid)")
	fs.StringVar(&o.logFile, "log", "", "start: the log of the background cluster (default <kubeconfig>.log)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if abs, err := filepath.Abs(o.kubeconfig); err == nil {
		o.kubeconfig = abs
	}
	if o.pidfile == "" {
		o.pidfile = o.kubeconfig + ".pid"
	}
	if o.logFile == "" {
		o.logFile = o.kubeconfig + ".log"
	}
	switch sub {
	case "run":
		return run(o)
	case "start":
		return startBackground(o, args)
	case "stop":
		return stopBackground(o)
	default:
		fmt.Fprintf(os.Stderr, "cluster: unknown subcommand %q (run, start, stop)\n", sub)
		return 2
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "[control-plane %s] %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// component is one child process: the same binary with a component's name.
type component struct {
	name    string
	args    []string
	logPath string
	verbose bool

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	stopping bool
}

func (c *component) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(self, append([]string{c.name}, c.args...)...)
	var out io.Writer = logFile
	if c.verbose {
		out = io.MultiWriter(logFile, prefixWriter{c.name, os.Stderr})
	}
	cmd.Stdout, cmd.Stderr = out, out
	// Children die with the orchestrator even if it is killed outright.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return err
	}
	c.cmd, c.done, c.stopping = cmd, make(chan struct{}), false
	done := c.done
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(done)
	}()
	return nil
}

// stop sends SIGTERM, then SIGKILL after the grace period, and waits.
func (c *component) stop(grace time.Duration) {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.stopping = true
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		logf("%s did not stop within %s; killing it", c.name, grace)
		_ = cmd.Process.Kill()
		<-done
	}
}

type prefixWriter struct {
	prefix string
	w      io.Writer
}

func (p prefixWriter) Write(b []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			fmt.Fprintf(p.w, "%s| %s", p.prefix, line)
		}
	}
	return len(b), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type cluster struct {
	o                    options
	dir                  string
	pki                  *pki
	etcdURL, server      string
	kcmPort              int
	etcd, apiserver, kcm *component
	adminHTTP, insecure  *http.Client
	lastTouch            time.Time
	touchMu              sync.Mutex
	components           []*component
	faultMu              sync.Mutex
}

func run(o options) int {
	started := time.Now()
	c, err := setUp(o)
	if err != nil {
		logf("error: %v", err)
		return 1
	}
	defer c.tearDown()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	ready := make(chan error, 1)
	go func() { ready <- c.bringUp() }()
	select {
	case err := <-ready:
		if err != nil {
			logf("error: %v", err)
			return 1
		}
	case s := <-sigs:
		logf("%s during start-up; stopping", s)
		return 1
	}
	elapsed := time.Since(started)
	control, err := c.serveControl()
	if err != nil {
		logf("error: %v", err)
		return 1
	}
	if err := c.writeKubeconfig(); err != nil {
		logf("error: %v", err)
		return 1
	}
	logf("ready in %.1fs: kube-apiserver %s at %s (etcd %s, kube-controller-manager with %s)",
		elapsed.Seconds(), kubernetesVersion, c.server, etcdVersion, controllers)
	logf("admin kubeconfig: %s", o.kubeconfig)
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, _ := exec.Command(kubectl, "--kubeconfig", o.kubeconfig, "version").CombinedOutput()
		fmt.Fprint(os.Stderr, string(out))
	}
	// Published last, so that whoever waits for it (cluster start) has the
	// lines above in the log it shows.
	st := state{
		PID: os.Getpid(), Kubeconfig: o.kubeconfig, Server: c.server, Etcd: c.etcdURL,
		Control: "http://" + control, DataDir: c.dir, StartSeconds: elapsed.Seconds(),
		Kubernetes: kubernetesVersion, EtcdVersion: etcdVersion,
	}
	if err := writeJSONAtomic(o.kubeconfig+".state.json", st); err != nil {
		logf("error: %v", err)
		return 1
	}
	logf("running; Ctrl-C or SIGTERM stops every component")

	parent := os.Getppid()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case s := <-sigs:
			logf("%s: stopping", s)
			return 0
		case name := <-c.unexpectedExit():
			logf("%s exited unexpectedly (log: %s); stopping the cluster", name, filepath.Join(c.dir, name+".log"))
			tail(filepath.Join(c.dir, name+".log"), 30)
			return 1
		case <-tick.C:
			if o.exitWithParent && os.Getppid() != parent {
				logf("the parent process exited: stopping")
				return 0
			}
			if o.idleExit > 0 {
				c.touchMu.Lock()
				idle := time.Since(c.lastTouch)
				c.touchMu.Unlock()
				if idle > o.idleExit {
					logf("no use for %s: stopping", o.idleExit)
					return 0
				}
			}
		}
	}
}

// unexpectedExit reports a component that exited while nobody was stopping it.
func (c *cluster) unexpectedExit() <-chan string {
	ch := make(chan string, 1)
	for _, comp := range c.components {
		comp.mu.Lock()
		done, stopping := comp.done, comp.stopping
		comp.mu.Unlock()
		if done == nil || stopping {
			continue
		}
		select {
		case <-done:
			comp.mu.Lock()
			unexpected := !comp.stopping && comp.done == done
			comp.mu.Unlock()
			if unexpected {
				ch <- comp.name
				return ch
			}
		default:
		}
	}
	return ch
}

func setUp(o options) (*cluster, error) {
	dir := o.dataDir
	var err error
	if dir == "" {
		if dir, err = os.MkdirTemp("", "control-plane-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	c := &cluster{o: o, dir: dir, lastTouch: time.Now()}
	if c.pki, err = newPKI(filepath.Join(dir, "pki")); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	etcdPort, peerPort, apiPort := ports[0], ports[1], ports[2]
	c.kcmPort = ports[3]
	c.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	c.server = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	p := c.pki

	c.etcd = &component{name: "etcd", logPath: filepath.Join(dir, "etcd.log"), verbose: o.verbose, args: []string{
		"--name=default",
		"--data-dir=" + filepath.Join(dir, "etcd"),
		"--listen-client-urls=" + c.etcdURL, "--advertise-client-urls=" + c.etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=default=" + peerURL,
		// A test cluster's data is thrown away: skip fsync as envtest's users often do.
		"--unsafe-no-fsync",
		"--log-level=warn",
		"--enable-pprof=" + strconv.FormatBool(os.Getenv("CONTROL_PLANE_PROFILING") == "1"),
	}}
	c.apiserver = &component{name: "kube-apiserver", logPath: filepath.Join(dir, "kube-apiserver.log"), verbose: o.verbose, args: []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file=" + p.servingCert, "--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-key-file=" + p.serviceAccountKey,
		"--service-account-signing-key-file=" + p.serviceAccountKey,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC",
		// The default admission chain of this release, plus NodeRestriction as
		// kubeadm clusters have it.
		"--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--allow-privileged=true",
		// CONTROL_PLANE_PROFILING=1 serves /debug/pprof, to see where the
		// apiserver's CPU goes in a benchmark (off by default, as in kubeadm's hardening guides).
		"--profiling=" + strconv.FormatBool(os.Getenv("CONTROL_PLANE_PROFILING") == "1"),
		"--v=1",
	}}
	kcmKubeconfig := filepath.Join(dir, "kube-controller-manager.kubeconfig")
	if err := os.WriteFile(kcmKubeconfig, kubeconfigYAML(c.server, p.caPEM, p.kcmCertPEM, p.kcmKeyPEM, "system:kube-controller-manager"), 0o600); err != nil {
		return nil, err
	}
	c.kcm = &component{name: "kube-controller-manager", logPath: filepath.Join(dir, "kube-controller-manager.log"), verbose: o.verbose, args: []string{
		"--kubeconfig=" + kcmKubeconfig,
		"--authentication-kubeconfig=" + kcmKubeconfig,
		"--authorization-kubeconfig=" + kcmKubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(c.kcmPort),
		"--cert-dir=" + filepath.Join(dir, "kcm-certs"),
		"--controllers=" + controllers,
		"--service-account-private-key-file=" + p.serviceAccountKey,
		"--root-ca-file=" + p.caCert,
		"--use-service-account-credentials=true",
		"--leader-elect=false",
		"--v=1",
	}}
	c.components = []*component{c.etcd, c.apiserver, c.kcm}

	cert, err := tls.X509KeyPair(p.adminCertPEM, p.adminKeyPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	c.adminHTTP = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}
	// The controller manager serves with a certificate it made itself.
	c.insecure = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}}
	return c, nil
}

func (c *cluster) bringUp() error {
	for _, step := range []struct {
		comp *component
		wait func() error
	}{
		{c.etcd, c.waitEtcd},
		{c.apiserver, c.waitAPIServer},
		{c.kcm, c.waitControllerManager},
	} {
		t := time.Now()
		if err := step.comp.start(); err != nil {
			return fmt.Errorf("starting %s: %w", step.comp.name, err)
		}
		if err := step.wait(); err != nil {
			tail(step.comp.logPath, 30)
			return fmt.Errorf("%s: %w (log: %s)", step.comp.name, err, step.comp.logPath)
		}
		logf("%s ready (%.1fs)", step.comp.name, time.Since(t).Seconds())
	}
	return nil
}

// poll calls check until it succeeds, the component exits, or 2 minutes pass.
func poll(comp *component, what string, check func() error) error {
	deadline := time.Now().Add(2 * time.Minute)
	var last error
	for time.Now().Before(deadline) {
		comp.mu.Lock()
		done := comp.done
		comp.mu.Unlock()
		select {
		case <-done:
			return fmt.Errorf("exited before %s", what)
		default:
		}
		if last = check(); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not %s after 2m: %v", what, last)
}

func get(client *http.Client, url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(body), nil
}

func expect200(client *http.Client, url string) error {
	code, body, err := get(client, url)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("GET %s: %d %s", url, code, strings.TrimSpace(body))
	}
	return nil
}

func (c *cluster) waitEtcd() error {
	return poll(c.etcd, "healthy", func() error {
		code, body, err := get(http.DefaultClient, c.etcdURL+"/health")
		if err != nil {
			return err
		}
		if code != 200 || !strings.Contains(body, `"true"`) {
			return fmt.Errorf("/health: %d %s", code, body)
		}
		return nil
	})
}

func (c *cluster) waitAPIServer() error {
	return poll(c.apiserver, "ready", func() error { return expect200(c.adminHTTP, c.server+"/readyz") })
}

func (c *cluster) waitControllerManager() error {
	if err := poll(c.kcm, "healthy", func() error {
		return expect200(c.insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", c.kcmPort))
	}); err != nil {
		return err
	}
	// The service-account controller has done its first pass once the
	// default namespace has its default ServiceAccount.
	return poll(c.kcm, "creating ServiceAccounts", func() error {
		return expect200(c.adminHTTP, c.server+"/api/v1/namespaces/default/serviceaccounts/default")
	})
}

func (c *cluster) tearDown() {
	for i := len(c.components) - 1; i >= 0; i-- {
		c.components[i].stop(20 * time.Second)
	}
	_ = os.Remove(c.o.kubeconfig + ".state.json")
	_ = os.Remove(c.o.kubeconfig)
	if c.o.dataDir == "" && !c.o.keepData {
		_ = os.RemoveAll(c.dir)
	}
	logf("stopped")
}

func (c *cluster) writeKubeconfig() error {
	if err := os.MkdirAll(filepath.Dir(c.o.kubeconfig), 0o755); err != nil {
		return err
	}
	data := kubeconfigYAML(c.server, c.pki.caPEM, c.pki.adminCertPEM, c.pki.adminKeyPEM, "kubernetes-admin")
	tmp := c.o.kubeconfig + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, c.o.kubeconfig)
}

func kubeconfigYAML(server string, ca, cert, key []byte, user string) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: control-plane
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: control-plane
  context:
    cluster: control-plane
    user: %s
    namespace: default
current-context: control-plane
`, server, b64(ca), user, b64(cert), b64(key), user))
}

func writeJSONAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func tail(path string, n int) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(os.Stderr, "--- last lines of %s\n%s\n---\n", path, strings.Join(lines, "\n"))
}

// serveControl answers the test harness's fault requests on 127.0.0.1:
//
//	POST /restart/{etcd,kube-apiserver,kube-controller-manager}[?down=2s]
//	POST /stop/NAME, POST /start/NAME
//	POST /compact          compacts etcd at its current revision (watches older than it get 410)
//	POST /touch            keeps an --idle-exit cluster alive
//	GET  /state
func (c *cluster) serveControl() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	byName := map[string]*component{}
	for _, comp := range c.components {
		byName[comp.name] = comp
	}
	wait := map[string]func() error{"etcd": c.waitEtcd, "kube-apiserver": c.waitAPIServer, "kube-controller-manager": c.waitControllerManager}
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, code int, err error) {
		w.WriteHeader(code)
		fmt.Fprintln(w, err)
	}
	lifecycle := func(action string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("name")
			comp := byName[name]
			if comp == nil {
				fail(w, 404, fmt.Errorf("no component %q", name))
				return
			}
			c.faultMu.Lock()
			defer c.faultMu.Unlock()
			t := time.Now()
			if action != "start" {
				// A short grace: the apiserver waits for its clients' open
				// connections far longer than a test wants to (measured: more
				// than 20s), so a restart here is closer to a crash.
				comp.stop(3 * time.Second)
				logf("%s stopped (control request)", name)
			}
			if action == "stop" {
				fmt.Fprintf(w, "%s stopped\n", name)
				return
			}
			if d, err := time.ParseDuration(r.URL.Query().Get("down")); err == nil {
				time.Sleep(d)
			}
			if err := comp.start(); err != nil {
				fail(w, 500, err)
				return
			}
			if err := wait[name](); err != nil {
				fail(w, 500, err)
				return
			}
			logf("%s started again (control request, %.1fs)", name, time.Since(t).Seconds())
			fmt.Fprintf(w, "%s %sed in %.1fs\n", name, action, time.Since(t).Seconds())
		}
	}
	mux.HandleFunc("POST /restart/{name}", lifecycle("restart"))
	mux.HandleFunc("POST /stop/{name}", lifecycle("stop"))
	mux.HandleFunc("POST /start/{name}", lifecycle("start"))
	mux.HandleFunc("POST /compact", func(w http.ResponseWriter, r *http.Request) {
		rev, err := c.compact(r.Context())
		if err != nil {
			fail(w, 500, err)
			return
		}
		logf("etcd compacted at revision %d (control request)", rev)
		fmt.Fprintf(w, "%d\n", rev)
	})
	mux.HandleFunc("POST /touch", func(w http.ResponseWriter, r *http.Request) {
		c.touchMu.Lock()
		c.lastTouch = time.Now()
		c.touchMu.Unlock()
		w.WriteHeader(204)
	})
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, r *http.Request) {
		data, _ := os.ReadFile(c.o.kubeconfig + ".state.json")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	})
	go func() { _ = http.Serve(l, mux) }()
	return l.Addr().String(), nil
}

func (c *cluster) compact(ctx context.Context) (int64, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.etcdURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "compact_rev_key")
	if err != nil {
		return 0, err
	}
	rev := resp.Header.Revision
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return 0, err
	}
	return rev, nil
}

// startBackground runs `cluster run` detached, with its output in a log
// file, and returns once the cluster is ready (or failed).
func startBackground(o options, args []string) int {
	if pid, ok := runningPID(o.pidfile); ok {
		if _, err := os.Stat(o.kubeconfig + ".state.json"); err == nil {
			logf("already running (pid %d); kubeconfig %s", pid, o.kubeconfig)
			return 0
		}
	}
	self, err := os.Executable()
	if err != nil {
		logf("error: %v", err)
		return 1
	}
	if err := os.MkdirAll(filepath.Dir(o.logFile), 0o755); err != nil {
		logf("error: %v", err)
		return 1
	}
	logFile, err := os.Create(o.logFile)
	if err != nil {
		logf("error: %v", err)
		return 1
	}
	defer logFile.Close()
	var runArgs []string
	for _, a := range args {
		if !strings.HasPrefix(a, "--pidfile") && !strings.HasPrefix(a, "-pidfile") {
			runArgs = append(runArgs, a)
		}
	}
	runArgs = append([]string{"cluster", "run", "--kubeconfig=" + o.kubeconfig}, runArgs...)
	closeInheritedFDs()
	cmd := exec.Command(self, runArgs...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	_ = os.Remove(o.kubeconfig + ".state.json")
	if err := cmd.Start(); err != nil {
		logf("error: %v", err)
		return 1
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(o.pidfile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		logf("error: %v", err)
		return 1
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	logf("starting in the background (pid %d, log %s)", pid, o.logFile)
	deadline := time.After(5 * time.Minute)
	for {
		select {
		case err := <-exited:
			logf("the cluster exited during start-up (%v)", err)
			tail(o.logFile, 40)
			_ = os.Remove(o.pidfile)
			return 1
		case <-deadline:
			logf("not ready after 5 minutes; stopping it")
			_ = cmd.Process.Signal(syscall.SIGTERM)
			tail(o.logFile, 40)
			return 1
		case <-time.After(200 * time.Millisecond):
			var st state
			if data, err := os.ReadFile(o.kubeconfig + ".state.json"); err == nil && json.Unmarshal(data, &st) == nil && st.PID == pid {
				data, _ := os.ReadFile(o.logFile)
				os.Stderr.Write(data)
				return 0
			}
		}
	}
}

func runningPID(pidfile string) (int, bool) {
	data, err := os.ReadFile(pidfile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return 0, false
	}
	return pid, true
}

func stopBackground(o options) int {
	pid, ok := runningPID(o.pidfile)
	if !ok {
		logf("not running (no live pid in %s)", o.pidfile)
		_ = os.Remove(o.pidfile)
		return 0
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			_ = os.Remove(o.pidfile)
			logf("stopped (pid %d)", pid)
			return 0
		}
		time.Sleep(100 * time.Millisecond)
	}
	logf("pid %d did not stop in 60s; killing it", pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	_ = os.Remove(o.pidfile)
	return 1
}

// closeInheritedFDs marks every descriptor this process inherited (beyond
// stdio) close-on-exec, so the detached cluster does not keep, say, the lock
// file that serialized its start held for its whole life.
func closeInheritedFDs() {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}
