package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tinymesh/tinymesh/xds/server"
)

// statusCommand is `controlplane status`: like istioctl proxy-status, it asks
// a running control plane's monitoring address for /debug/status and prints
// one line per connected proxy, or the JSON itself with --json.
func statusCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controlplane status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", defaultMonitoringAddr, "the control plane's --monitoring-addr")
	asJSON := fs.Bool("json", false, "print the status as JSON")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the control plane")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "controlplane status: unexpected arguments %q\n", fs.Args())
		return 2
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get("http://" + *addr + "/debug/status")
	if err != nil {
		fmt.Fprintln(stderr, "controlplane status:", err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "controlplane status: GET /debug/status: %s %v\n", resp.Status, err)
		return 1
	}
	var proxies []server.ProxyStatus
	if err := json.Unmarshal(body, &proxies); err != nil {
		fmt.Fprintln(stderr, "controlplane status: decode /debug/status:", err)
		return 1
	}
	if *asJSON {
		stdout.Write(body)
		return 0
	}
	printStatus(stdout, proxies)
	return 0
}

// printStatus writes the proxy-status table: per type its state and the
// version sent (8 characters of it), then the last NACK's type and message.
func printStatus(w io.Writer, proxies []server.ProxyStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tNAMESPACE\tVARIANT\t"+strings.Join(server.ShortTypes, "\t")+"\tIN SYNC\tLAST NACK")
	for _, p := range proxies {
		cells := []string{p.NodeID, p.Namespace, p.Variant}
		for _, typ := range server.ShortTypes {
			st := p.Types[typ]
			cell := st.State
			if st.Sent != "" {
				cell += " (" + short(st.Sent) + ")"
			}
			cells = append(cells, cell)
		}
		cells = append(cells, fmt.Sprint(p.InSync))
		nack := "-"
		if p.LastNACK != nil {
			nack = fmt.Sprintf("%s %s %s: %s", p.LastNACK.Time.UTC().Format(time.RFC3339), p.LastNACK.Type,
				short(p.LastNACK.Version), oneLine(p.LastNACK.Message))
		}
		cells = append(cells, nack)
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
}

func short(version string) string {
	if len(version) > 8 {
		return version[:8]
	}
	return version
}

// oneLine keeps a table row on one line; the NACK message is the last column,
// so it is printed whole (its end usually holds the cause).
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
