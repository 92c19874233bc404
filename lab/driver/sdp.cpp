// Text the interop scenario reads and rewrites: SDP attributes and sections, and a real H.264
// clip cut into access units.

#include "driver.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace lab {

namespace {

std::string read_file(const char *path) {
	FILE *f = std::fopen(path, "rb");
	if (!f)
		die(std::string("cannot read LAB_H264_FILE ") + path);
	std::string data;
	char buf[65536];
	size_t n;
	while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0)
		data.append(buf, n);
	std::fclose(f);
	return data;
}

// Offset of each NAL's start code (the long one's leading zero included).
std::vector<size_t> nal_starts(const std::string &data) {
	std::vector<size_t> starts;
	for (size_t i = 0; i + 3 < data.size(); ++i) {
		if (data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1) {
			starts.push_back(i > 0 && data[i - 1] == 0 ? i - 1 : i);
			i += 2;
		}
	}
	return starts;
}

} // namespace

// Annex-B access units from LAB_H264_FILE (a real clip a remote can decode), split where a new
// picture starts: at an AUD or SPS, or at a slice whose first_mb_in_slice is 0 (ue(v) 0 is a
// single 1 bit) after the current unit already holds a slice.
std::vector<std::string> h264_file_frames(const char *path) {
	std::string data = read_file(path);
	std::vector<size_t> starts = nal_starts(data);
	std::vector<std::string> frames;
	std::string current;
	bool has_slice = false;
	for (size_t k = 0; k < starts.size(); ++k) {
		size_t begin = starts[k], end = k + 1 < starts.size() ? starts[k + 1] : data.size();
		size_t header = data.find('\x01', begin) + 1;
		if (header >= end)
			continue;
		int type = data[header] & 0x1f;
		bool slice = type == 1 || type == 5;
		bool first_mb_zero = slice && header + 1 < end && (uint8_t(data[header + 1]) & 0x80);
		if (has_slice && (type == 9 || type == 7 || first_mb_zero)) {
			frames.push_back(current);
			current.clear();
			has_slice = false;
		}
		std::string nal = data.substr(begin, end - begin);
		if (nal.compare(0, 4, std::string("\x00\x00\x00\x01", 4)) != 0)
			nal.insert(0, 1, '\0'); // one separator for the packetizer: the long start code
		current += nal;
		has_slice = has_slice || slice;
	}
	if (has_slice)
		frames.push_back(current);
	if (frames.empty())
		die(std::string("no H.264 access units in ") + path);
	return frames;
}

std::string attribute(const std::string &sdp, const char *name) {
	size_t at = sdp.find(name);
	if (at == std::string::npos)
		return "";
	size_t end = sdp.find_first_of("\r\n", at);
	return sdp.substr(at + std::strlen(name), end - at - std::strlen(name));
}

// The offer's H.264 payload type a constrained-baseline encoder fits: packetization-mode=1 and a
// 42xxxx profile preferred, else the first H.264 one; -1 when the offer has no H.264 at all.
int offered_h264_payload_type(const std::string &sdp, std::string &mid, std::string &fmtp) {
	int best = -1, any = -1;
	bool in_video = false;
	size_t pos = 0;
	while (pos < sdp.size()) {
		size_t eol = sdp.find('\n', pos);
		std::string line = sdp.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
		pos = eol == std::string::npos ? sdp.size() : eol + 1;
		if (!line.empty() && line.back() == '\r')
			line.pop_back();
		if (line.compare(0, 2, "m=") == 0)
			in_video = line.compare(0, 8, "m=video ") == 0 && mid.empty();
		if (!in_video)
			continue;
		if (line.compare(0, 6, "a=mid:") == 0)
			mid = line.substr(6);
		int pt = -1;
		if (std::sscanf(line.c_str(), "a=rtpmap:%d H264/90000", &pt) == 1 && line.find("H264/90000") != std::string::npos && any < 0)
			any = pt;
		if (std::sscanf(line.c_str(), "a=fmtp:%d ", &pt) == 1 && best < 0 &&
		    line.find("packetization-mode=1") != std::string::npos && line.find("profile-level-id=42") != std::string::npos &&
		    sdp.find("a=rtpmap:" + std::to_string(pt) + " H264/90000") != std::string::npos)
			best = pt;
	}
	int pt = best >= 0 ? best : any;
	// The answer repeats the offer's parameters: a peer that finds none assumes packetization-mode 0.
	if (pt >= 0)
		fmtp = attribute(sdp, ("a=fmtp:" + std::to_string(pt) + " ").c_str());
	return pt;
}

namespace {

// `session` with `mid` moved to the front of its a=group:BUNDLE line.
void bundle_tag_first(std::string &session, const std::string &mid) {
	size_t group = session.find("a=group:BUNDLE ");
	if (group == std::string::npos || mid.empty())
		return;
	size_t end = session.find("\r\n", group);
	std::string mids = " " + session.substr(group + 15, end - group - 15) + " ";
	size_t at = mids.find(" " + mid + " ");
	if (at != std::string::npos)
		mids.erase(at, mid.size() + 1);
	session.replace(group, end - group, "a=group:BUNDLE " + mid + mids.substr(0, mids.size() - 1));
}

} // namespace

// The offer with its m=application section first and its mid first in a=group:BUNDLE, which
// makes it the offerer's BUNDLE tag (RFC 8843). libdatachannel puts every track before the
// application in a first offer, whatever was created first, and has no setting for it; a remote
// that rejects the tagged m-line (port 0: a browser without H.264) drops the whole BUNDLE and no
// ICE runs at all, data channels included. An application that offers media and data channels
// must reorder like this before signaling (or offer data channels alone and add media later by
// renegotiation). libdatachannel matches the answer's m-lines by mid, so its own order differs
// harmlessly. Its candidates sit in one m-section (the first, the video's): they move to the
// application's too, or a browser that rejects video discards them with the video's transport.
std::string application_first(const std::string &sdp) {
	std::vector<std::string> sections(1); // [0] the session part, then one per m=
	std::string candidates;
	size_t pos = 0;
	while (pos < sdp.size()) {
		size_t eol = sdp.find("\r\n", pos);
		std::string line = sdp.substr(pos, eol == std::string::npos ? std::string::npos : eol - pos);
		pos = eol == std::string::npos ? sdp.size() : eol + 2;
		if (line.compare(0, 2, "m=") == 0)
			sections.emplace_back();
		if (line.compare(0, 12, "a=candidate:") == 0 || line == "a=end-of-candidates")
			candidates += line + "\r\n";
		else if (!line.empty())
			sections.back() += line + "\r\n";
	}
	auto app = std::find_if(sections.begin() + 1, sections.end(),
	                        [](const std::string &m) { return m.compare(0, 14, "m=application ") == 0; });
	if (app == sections.end())
		return sdp;
	std::string mid = attribute(*app, "a=mid:");
	std::string moved = *app + candidates;
	sections.erase(app);
	sections.insert(sections.begin() + 1, moved);
	bundle_tag_first(sections[0], mid);
	std::string out;
	for (const auto &section : sections)
		out += section;
	return out;
}

// True when the m-section with this mid is rejected (port 0) or inactive in `sdp`.
bool media_refused(const std::string &sdp, const std::string &mid) {
	size_t at = sdp.find("a=mid:" + mid + "\r\n");
	if (at == std::string::npos)
		return true;
	size_t start = sdp.rfind("\r\nm=", at);
	size_t next = sdp.find("\r\nm=", at);
	std::string section = sdp.substr(start + 2, next == std::string::npos ? std::string::npos : next - start - 2);
	size_t port = section.find(' ') + 1;
	return section.compare(port, 2, "0 ") == 0 || section.find("a=inactive\r\n") != std::string::npos;
}

} // namespace lab
