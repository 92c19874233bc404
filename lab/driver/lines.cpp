// The line protocol with the relay (`cargo xtask lab`): lines out on stdout, lines in from stdin
// kept until a wait takes the one it needs.

#include "driver.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace lab {

long env_long(const char *name, long fallback) {
	const char *v = std::getenv(name);
	return v && *v ? std::strtol(v, nullptr, 10) : fallback;
}

[[noreturn]] void die(const std::string &why) {
	std::fprintf(stderr, "scenario: %s\n", why.c_str());
	std::fflush(stderr);
	std::_Exit(3);
}

namespace {
std::mutex out_mutex;
}

void send_line(const std::string &line) {
	std::lock_guard<std::mutex> lock(out_mutex);
	std::fwrite(line.data(), 1, line.size(), stdout);
	std::fputc('\n', stdout);
	std::fflush(stdout);
}

std::string escape(const std::string &sdp) {
	std::string out;
	for (char c : sdp) {
		if (c == '\r')
			out += "\\r";
		else if (c == '\n')
			out += "\\n";
		else
			out += c;
	}
	return out;
}

std::string unescape(const std::string &s) {
	std::string out;
	for (size_t i = 0; i < s.size(); ++i) {
		if (s[i] == '\\' && i + 1 < s.size()) {
			out += s[i + 1] == 'r' ? '\r' : '\n';
			++i;
		} else {
			out += s[i];
		}
	}
	return out;
}

Inbox inbox;

void Inbox::reader() {
	std::string line;
	while (std::getline(std::cin, line)) {
		std::lock_guard<std::mutex> lock(mutex);
		lines.push_back(line);
		cv.notify_all();
	}
	std::lock_guard<std::mutex> lock(mutex);
	closed = true;
	cv.notify_all();
}

std::string Inbox::take(const std::string &prefix, std::chrono::seconds timeout) {
	std::unique_lock<std::mutex> lock(mutex);
	auto deadline = std::chrono::steady_clock::now() + timeout;
	while (true) {
		for (auto it = lines.begin(); it != lines.end(); ++it) {
			if (it->compare(0, prefix.size(), prefix) == 0) {
				std::string line = *it;
				lines.erase(it);
				return line;
			}
		}
		if (closed)
			die("peer went away while waiting for `" + prefix + "`");
		if (cv.wait_until(lock, deadline) == std::cv_status::timeout)
			die("timed out waiting for `" + prefix + "`");
	}
}

std::string Inbox::take_while(const std::string &prefix, const std::function<long()> &progress,
                              std::chrono::seconds idle) {
	long last = progress();
	auto deadline = std::chrono::steady_clock::now() + idle;
	std::string line;
	// Progress is checked once a second; the line itself is taken as soon as it comes.
	while (!poll(prefix, 1s, line)) {
		{
			std::lock_guard<std::mutex> lock(mutex);
			if (closed)
				die("peer went away while waiting for `" + prefix + "`");
		}
		long now = progress();
		if (now != last) {
			last = now;
			deadline = std::chrono::steady_clock::now() + idle;
		} else if (std::chrono::steady_clock::now() >= deadline) {
			die("timed out waiting for `" + prefix + "`: no progress for " + std::to_string(idle.count()) +
			    " s, stuck at " + std::to_string(now));
		}
	}
	return line;
}

bool Inbox::poll(const std::string &prefix, std::chrono::milliseconds timeout, std::string &out) {
	std::unique_lock<std::mutex> lock(mutex);
	auto deadline = std::chrono::steady_clock::now() + timeout;
	while (true) {
		for (auto it = lines.begin(); it != lines.end(); ++it) {
			if (it->compare(0, prefix.size(), prefix) == 0) {
				out = *it;
				lines.erase(it);
				return true;
			}
		}
		if (closed || cv.wait_until(lock, deadline) == std::cv_status::timeout)
			return false;
	}
}

} // namespace lab
