// runc-shim: runc, minus what this host cannot grant.
//
// On some hosts (this project's VMs among them) root's capability bounding set lacks CAP_SYS_RESOURCE.
// Two things then fail that kind needs:
//   - `docker run --privileged` (kind's nodes): a privileged container asks for every capability, and runc
//     fails with "unable to apply caps: operation not permitted";
//   - inside a node, every pod sandbox and most containers: kubelet asks for an oom_score_adj below the
//     node's (the pause container -998), which needs CAP_SYS_RESOURCE, and runc's child dies ("can't get
//     final child's PID from pipe: EOF").
//
// Installed as Docker's default runtime on the host, and as `runc` on the PATH of containerd's shim inside
// the node image, this wrapper rewrites the OCI bundle's config.json (on create/run) or the --process file (on
// exec): it drops every capability outside the bounding set, and raises an oom_score_adj that is lower than
// the caller's own to the caller's own (the kernel would refuse it). Then it runs the real runc with the same
// arguments. Nothing else changes; on a host that lacks nothing, nothing is rewritten.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
	"CHECKPOINT_RESTORE",
}

func realRunc() string {
	if path := os.Getenv("SERVE_CHAOS_REAL_RUNC"); path != "" {
		return path
	}
	return "/usr/sbin/runc"
}

// missingCaps: the capabilities absent from this process's bounding set.
func missingCaps() map[string]bool {
	missing := map[string]bool{}
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return missing
	}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "CapBnd:") {
			continue
		}
		bounding, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapBnd:")), 16, 64)
		if err != nil {
			return missing
		}
		for bit, name := range capNames {
			if bounding>>uint(bit)&1 == 0 {
				missing["CAP_"+name] = true
			}
		}
	}
	return missing
}

func ownOOMScoreAdj() (int, bool) {
	data, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, false
	}
	value, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return value, err == nil
}

// fixProcess edits an OCI "process" object in place; it reports whether anything changed.
func fixProcess(process map[string]any, missing map[string]bool) bool {
	changed := false
	if caps, ok := process["capabilities"].(map[string]any); ok && len(missing) > 0 {
		for set, list := range caps {
			values, ok := list.([]any)
			if !ok {
				continue
			}
			kept := make([]any, 0, len(values))
			for _, v := range values {
				if name, ok := v.(string); ok && missing[name] {
					changed = true
					continue
				}
				kept = append(kept, v)
			}
			caps[set] = kept
		}
	}
	if missing["CAP_SYS_RESOURCE"] {
		if adj, ok := process["oomScoreAdj"].(float64); ok {
			if own, ok := ownOOMScoreAdj(); ok && int(adj) < own {
				process["oomScoreAdj"] = own
				changed = true
			}
		}
	}
	return changed
}

func rewrite(path string, processOnly bool) error {
	missing := missingCaps()
	if len(missing) == 0 {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(data, &spec); err != nil {
		return err
	}
	process := spec
	if !processOnly {
		p, ok := spec["process"].(map[string]any)
		if !ok {
			return nil
		}
		process = p
	}
	if !fixProcess(process, missing) {
		return nil
	}
	out, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}

func option(args []string, names ...string) string {
	for i, arg := range args {
		for _, name := range names {
			if arg == name && i+1 < len(args) {
				return args[i+1]
			}
			if strings.HasPrefix(arg, name+"=") {
				return strings.TrimPrefix(arg, name+"=")
			}
		}
	}
	return ""
}

func main() {
	args := os.Args[1:]
	command := ""
	for _, arg := range args {
		if arg == "create" || arg == "run" || arg == "exec" {
			command = arg
			break
		}
	}
	var err error
	switch command {
	case "create", "run":
		bundle := option(args, "--bundle", "-b")
		if bundle == "" {
			bundle = "."
		}
		err = rewrite(filepath.Join(bundle, "config.json"), false)
	case "exec":
		if process := option(args, "--process", "-p"); process != "" {
			err = rewrite(process, true)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "runc-shim: %v\n", err)
		os.Exit(1)
	}
	runc := realRunc()
	if err := syscall.Exec(runc, append([]string{runc}, args...), os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "runc-shim: exec %s: %v\n", runc, err)
		os.Exit(1)
	}
}
