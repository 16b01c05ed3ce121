// vmdr-vcsim: the vSphere endpoint vmdr's tests run against (test/helpers/vcsim.ts starts one per suite).
//
// Why a main of our own rather than Debian's vcsim command: Debian ships govmomi 0.24.2 as a Go
// library only. What this adds to the library's simulator:
//   - exactly one user: -user, with the password from the environment (VCSIM_PASSWORD), never from
//     argv, so no password shows in `ps`; any other login fails with InvalidLogin;
//   - TLS with the simulator's own self-signed localhost certificate, and one JSON line on stdout
//     ({"url":…,"thumbprint":"SHA256:AA:…"}) so a test knows where it listens and what to pin;
//   - a stand-in for VMware Tools: a VM that powers on reports guest.toolsRunningStatus
//     guestToolsRunning (toolsStatus toolsOk) after -tools-delay, and loses it when it powers off,
//     as a guest with Tools would; the simulator boots no guest, and vmdr's health checks on vSphere
//     read exactly these properties. The simulator's own handling of a pending customization at
//     power on (guest.net, guest.hostName) is kept as it is;
//   - -exit-on-stdin-eof: a test runner that dies without stopping it leaves no simulator behind.
//
// Build: GOPATH=/usr/share/gocode GO111MODULE=off go build (scripts/lab/build-vcsim).
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// toolsStandIn follows every VM's power state through the registry's update callbacks, so VMs made
// later (CreateVM_Task, CloneVM_Task, RegisterVM_Task) are covered as well as the model's own.
type toolsStandIn struct {
	delay time.Duration
	mu    sync.Mutex
	// boots counts power-ons per VM: a delayed "tools running" for a boot that has since ended is dropped.
	boots map[types.ManagedObjectReference]int
}

func (t *toolsStandIn) Reference() types.ManagedObjectReference {
	return types.ManagedObjectReference{Type: "VmdrToolsStandIn", Value: "vmdr-tools-stand-in"}
}

func (t *toolsStandIn) PutObject(mo.Reference) {}

func (t *toolsStandIn) RemoveObject(ref types.ManagedObjectReference) {
	t.mu.Lock()
	delete(t.boots, ref)
	t.mu.Unlock()
}

func (t *toolsStandIn) UpdateObject(obj mo.Reference, changes []types.PropertyChange) {
	ref := obj.Reference()
	if ref.Type != "VirtualMachine" {
		return
	}
	for _, change := range changes {
		if change.Name != "runtime.powerState" {
			continue
		}
		state, _ := change.Val.(types.VirtualMachinePowerState)
		t.mu.Lock()
		t.boots[ref]++
		boot := t.boots[ref]
		t.mu.Unlock()
		if state == types.VirtualMachinePowerStatePoweredOn {
			go t.toolsUpLater(ref, boot)
		} else {
			// Called from inside the power operation, which already holds the VM's lock.
			if vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine); ok {
				setTools(vm, false)
			}
		}
	}
}

func (t *toolsStandIn) toolsUpLater(ref types.ManagedObjectReference, boot int) {
	time.Sleep(t.delay)
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	simulator.Map.WithLock(ref, func() {
		t.mu.Lock()
		current := t.boots[ref] == boot
		t.mu.Unlock()
		if current && vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
			setTools(vm, true)
		}
	})
}

// setTools records Tools as running or not, through Map.Update so property collectors see it.
func setTools(vm *simulator.VirtualMachine, running bool) {
	runningStatus := types.VirtualMachineToolsRunningStatusGuestToolsNotRunning
	status := types.VirtualMachineToolsStatusToolsNotRunning
	if running {
		runningStatus = types.VirtualMachineToolsRunningStatusGuestToolsRunning
		status = types.VirtualMachineToolsStatusToolsOk
	}
	if vm.Guest == nil {
		vm.Guest = &types.GuestInfo{}
	}
	if vm.Summary.Guest == nil {
		vm.Summary.Guest = &types.VirtualMachineGuestSummary{}
	}
	vm.Guest.ToolsRunningStatus = string(runningStatus)
	vm.Guest.ToolsStatus = status
	vm.Summary.Guest.ToolsRunningStatus = string(runningStatus)
	vm.Summary.Guest.ToolsStatus = status
	simulator.Map.Update(vm, []types.PropertyChange{
		{Name: "guest.toolsRunningStatus", Val: string(runningStatus)},
		{Name: "guest.toolsStatus", Val: status},
		{Name: "summary.guest.toolsRunningStatus", Val: string(runningStatus)},
		{Name: "summary.guest.toolsStatus", Val: status},
	})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	user := flag.String("user", "", "the one user name accepted (its password comes from VCSIM_PASSWORD)")
	toolsDelay := flag.Duration("tools-delay", 500*time.Millisecond, "how long after power on VMware Tools report running")
	exitOnStdinEOF := flag.Bool("exit-on-stdin-eof", false, "exit when stdin closes (the parent is gone)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("vmdr-vcsim: ")

	password, ok := os.LookupEnv("VCSIM_PASSWORD")
	if *user == "" || !ok || password == "" {
		log.Fatal("-user and the environment variable VCSIM_PASSWORD are both required")
	}
	if !strings.HasPrefix(*listen, "127.") && !strings.HasPrefix(*listen, "[::1]") && !strings.HasPrefix(*listen, "localhost:") {
		log.Fatalf("-listen %s: only loopback addresses are allowed", *listen)
	}

	model := simulator.VPX()
	if err := model.Create(); err != nil {
		log.Fatalf("creating the inventory: %v", err)
	}
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, password)}

	// The model's VMs were powered on by Create(), before this handler existed: their Tools come up now.
	tools := &toolsStandIn{delay: *toolsDelay, boots: map[types.ManagedObjectReference]int{}}
	simulator.Map.AddHandler(tools)
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		simulator.Map.WithLock(vm.Self, func() {
			if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
				setTools(vm, true)
			}
		})
	}

	server := model.Service.NewServer()
	fingerprint := sha256.Sum256(server.Certificate().Raw)
	hexes := make([]string, len(fingerprint))
	for i, b := range fingerprint {
		hexes[i] = fmt.Sprintf("%02X", b)
	}
	endpoint := url.URL{Scheme: "https", Host: server.URL.Host, Path: server.URL.Path}
	line, _ := json.Marshal(struct {
		URL        string `json:"url"`
		Thumbprint string `json:"thumbprint"`
	}{endpoint.String(), "SHA256:" + strings.Join(hexes, ":")})
	os.Stdout.Write(append(line, '\n'))

	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGTERM, syscall.SIGINT)
	if *exitOnStdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			done <- syscall.SIGTERM
		}()
	}
	<-done
	server.Close()
	model.Remove()
}
