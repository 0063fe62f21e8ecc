// One request by Go's net/http client, for the conformance suite. Reads
// the same spec as fetch.py from the file named by FETCH_SPEC_FILE (client
// "go"): HTTP/2 is attempted by ALPN, as Go's default transport does, and
// gzip is asked for and decoded transparently, as it is by default. Prints
// {"status", "headers", "body_b64", "trailers"} or {"error"}.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

type spec struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers [][2]string       `json:"headers"`
	Body    *string           `json:"body_b64"`
	CA      string            `json:"ca"`
	Proxy   *string           `json:"proxy"`
	Resolve map[string]string `json:"resolve"`
}

func fail(err error) {
	out, _ := json.Marshal(map[string]string{"error": err.Error()})
	fmt.Println(string(out))
	os.Exit(0)
}

func pairs(h http.Header) [][2]string {
	out := [][2]string{}
	for name, values := range h {
		for _, v := range values {
			out = append(out, [2]string{name, v})
		}
	}
	return out
}

func main() {
	raw, err := os.ReadFile(os.Getenv("FETCH_SPEC_FILE"))
	if err != nil {
		fail(err)
	}
	var s spec
	if err := json.Unmarshal(raw, &s); err != nil {
		fail(err)
	}
	pem, err := os.ReadFile(s.CA)
	if err != nil {
		fail(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}
	if s.Proxy != nil {
		u, err := url.Parse(*s.Proxy)
		if err != nil {
			fail(err)
		}
		transport.Proxy = http.ProxyURL(u)
	} else {
		dialer := &net.Dialer{Timeout: 30 * time.Second}
		transport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if ip, ok := s.Resolve[host]; ok {
				addr = net.JoinHostPort(ip, port)
			}
			return dialer.DialContext(ctx, network, addr)
		}
	}
	var body io.Reader
	if s.Body != nil {
		b, err := base64.StdEncoding.DecodeString(*s.Body)
		if err != nil {
			fail(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(s.Method, s.URL, body)
	if err != nil {
		fail(err)
	}
	for _, h := range s.Headers {
		req.Header.Add(h[0], h[1])
	}
	client := &http.Client{
		Transport:     transport,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		fail(err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		fail(err)
	}
	out, _ := json.Marshal(map[string]interface{}{
		"status":   resp.StatusCode,
		"headers":  pairs(resp.Header),
		"body_b64": base64.StdEncoding.EncodeToString(data),
		"trailers": pairs(resp.Trailer),
	})
	fmt.Println(string(out))
}
