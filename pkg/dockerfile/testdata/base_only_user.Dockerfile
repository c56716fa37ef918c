FROM docker.io/jupyter/base-notebook:latest
