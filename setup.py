"""novaproxy: high availability for OpenStack VMs through a host-to-guest interface.

``pip install novaproxy`` installs guestd only (standard library, for guest
images); ``pip install novaproxy[api]`` the proxy, ``[agent]`` the host agent,
``[test]`` everything the test suite needs.
"""

from setuptools import find_packages, setup

# oslo.policy: Nova's policy rules, checked before the guest is asked (api/precheck.py).
# keystoneauth1: the operators' CLI installed with it (``novaproxy scale`` authenticates).
SERVER = ["webob>=1.8", "PasteDeploy>=3.0", "redis>=5.0", "urllib3>=2.0", "cheroot>=10.0",
          "oslo.policy>=4.0", "keystoneauth1>=5.0"]

setup(
    name="novaproxy",
    version="0.1.0",
    description=__doc__.splitlines()[0],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["guestd", "guestd.*", "novaproxy", "novaproxy.*"]),
    install_requires=[],
    extras_require={
        "api": SERVER,
        "agent": ["redis>=5.0", "keystoneauth1>=5.0", "libvirt-python>=9.0"],
        "test": SERVER + [
            "keystoneauth1>=5.0", "libvirt-python>=9.0", "pytest>=8", "webtest>=3.0",
            "python-novaclient>=18", "openstacksdk>=3", "ruff",
            "nova==34.0.0", "openstack-placement", "SQLAlchemy<2.1", "oslotest",
            "wsgi-intercept",
        ],
    },
    entry_points={
        "console_scripts": [
            "guestd = guestd.daemon:main",
            "guestd-ctl = guestd.ctl:main",
            "novaproxy-api = novaproxy.api.server:main",
            "novaproxy-agent = novaproxy.agent.service:main",
            "novaproxy = novaproxy.cli:main",
        ],
        "paste.filter_factory": ["negotiation = novaproxy.api.negotiation:filter_factory"],
        "paste.app_factory": ["forward = novaproxy.api.forward:app_factory"],
    },
)
