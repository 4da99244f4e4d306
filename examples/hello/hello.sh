#!/bin/sh
# Prints a greeting; with `serve`, also serves /www on port 8080.
echo "hello from buildgrid"
if [ "$1" = "serve" ]; then
    exec httpd -f -p 8080 -h /www
fi
