# shellcheck shell=bash
# The machine a benchmark ran on, for its report: cores, CPU, memory, kernel.
machine_description() {
    local cpu memory
    memory=$(free -g | awk '/^Mem:/ {print $2 " GiB"}')
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    echo "$(nproc) cores ($cpu), $memory memory, $(uname -sr)"
}
