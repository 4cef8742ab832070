import hashlib
import os

from django.http import FileResponse, JsonResponse
from django.shortcuts import render


def worker_pid(get_response):
    """Middleware: which worker answered (tests and the benchmark's warm-up
    spread requests over every worker with it)."""
    def middleware(request):
        response = get_response(request)
        response["X-Worker-Pid"] = str(os.getpid())
        return response
    return middleware


def form(request):
    """GET: a CSRF-protected form; POST: its answer (403 without the token)."""
    name = request.POST.get("name", "") if request.method == "POST" else ""
    return render(request, "form.html", {"name": name})


def upload(request):
    """A CSRF-protected multipart upload: its size and SHA-256."""
    if request.method != "POST" or "file" not in request.FILES:
        return JsonResponse({"error": "POST a file"}, status=400)
    digest = hashlib.sha256()
    size = 0
    for chunk in request.FILES["file"].chunks():
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse({"name": request.FILES["file"].name, "size": size,
                         "sha256": digest.hexdigest()})


def file(request):
    """A FileResponse of the file RGUN_DJANGO_FILE names (the server may
    send it with wsgi.file_wrapper)."""
    return FileResponse(open(os.environ["RGUN_DJANGO_FILE"], "rb"),
                        as_attachment=True, filename="payload.bin")


def environ(request):
    """What the server put in the WSGI environ that a Django user reads."""
    keys = ("SERVER_SOFTWARE", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR",
            "wsgi.url_scheme", "wsgi.multiprocess", "wsgi.multithread")
    return JsonResponse({k: request.META.get(k) for k in keys})
