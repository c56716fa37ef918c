FROM docker.io/library/ubuntu:22.04
